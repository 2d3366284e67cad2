package commit

import (
	"errors"
	"log/slog"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/txn"
)

// txnRound is round for an exactly-once worker: with the transaction's
// gate held, so that no delivery is between putting its records in the
// transaction and finishing its message, it takes every partition's
// committable offset and done-set and commits them in the transaction with
// the records. When the transaction aborts, every partition is released
// without a commit: their messages since the last commit are handled
// again (the engine gives the partitions up, see txn.Txn.Current).
func (c *Committer) txnRound() (flushesWait bool) {
	c.settleFlushes()
	c.txn.Hold()
	c.mu.Lock()
	parts := make([]committable, 0, len(c.parts))
	for p := range c.parts {
		parts = append(parts, p)
	}
	c.mu.Unlock()

	type entry struct {
		p    committable
		off  int64
		meta string
	}
	var sent []entry
	bySess := map[sarama.ConsumerGroupSession]*txn.Offsets{}
	var offsets []txn.Offsets
	for _, p := range parts {
		off, meta, ok := p.toCommit()
		if !ok {
			continue
		}
		sess := p.session()
		o := bySess[sess]
		if o == nil {
			o = &txn.Offsets{Group: c.groupMetadata(sess), Topics: map[string][]*sarama.PartitionOffsetMetadata{}}
			bySess[sess] = o
		}
		o.Topics[p.Topic()] = append(o.Topics[p.Topic()],
			&sarama.PartitionOffsetMetadata{Partition: p.Partition(), Offset: off, LeaderEpoch: -1, Metadata: &meta})
		sent = append(sent, entry{p, off, meta})
	}
	for _, o := range bySess {
		offsets = append(offsets, *o)
	}
	err := c.txn.Commit(offsets)
	c.txn.Release()

	switch {
	case err == nil:
		for _, e := range sent {
			e.p.ack(e.off, e.meta)
			c.noteFlushError(e.p, nil)
		}
		if c.onCommit != nil && len(sent) > 0 {
			c.onCommit(true)
		}
	default:
		for _, p := range parts {
			p.release() // nothing more is committed for it: it is given up
			c.noteFlushError(p, err)
		}
		if c.onCommit != nil {
			c.onCommit(false)
		}
		var fatal *txn.FatalError
		if errors.As(err, &fatal) {
			c.log.Error("the transactional producer cannot go on; the worker stops", slog.Any("error", err))
			if c.fatal != nil {
				c.fatal(err)
			}
		} else {
			c.log.Error("transaction aborted; the partitions are given up and their messages since the last commit handled again", slog.Any("error", err))
		}
	}
	return c.settleFlushes()
}

// groupMetadata is what the broker fences a zombie by: the session's
// generation and member id, and the static membership id.
func (c *Committer) groupMetadata(sess sarama.ConsumerGroupSession) sarama.ConsumerGroupMetadata {
	md := sarama.ConsumerGroupMetadata{GroupID: c.group, GenerationID: sarama.GroupGenerationUndefined}
	if sess != nil {
		md.GenerationID, md.MemberID = sess.GenerationID(), sess.MemberID()
	}
	if c.instanceID != "" {
		id := c.instanceID
		md.GroupInstanceID = &id
	}
	return md
}
