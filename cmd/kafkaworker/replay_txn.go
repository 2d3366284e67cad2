package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// dlq replay is exactly-once: each batch's records and the replay group's
// new offsets are committed in one Kafka transaction, so a replay killed at
// any point (SIGKILL, OOM, a lost machine) has either committed a batch,
// records and progress together, or nothing of it that a read_committed
// consumer sees. The next run resumes from the last committed progress.
//
// The transactional.id is fixed for a replay group and dead-letter topic
// (replayTransactionalID). A new run's InitProducerId therefore fences the
// run before it: the broker aborts that run's open transaction at once
// instead of waiting out the transaction timeout, and a run still alive
// fails at its next request with errReplayFenced. Two replays of one
// dead-letter topic into one replay group cannot both send.

const (
	// replayCommitEvery is how long a paced replay keeps a transaction
	// open: records are sent as the pace allows, and committed with the
	// progress at least this often (and at every replayBatch records).
	replayCommitEvery = time.Second
	// replayAttempts is how often a batch is tried when its transaction
	// is aborted (by an error the producer can recover from) before the
	// replay gives up.
	replayAttempts = 3
	// replayTxnTimeout is the transaction timeout asked of the broker:
	// the longest a transaction of a run that dies without a successor
	// stays open (holding back read_committed consumers of the target).
	replayTxnTimeout = time.Minute
)

// stableWait is how long the replay waits for a transaction holding offsets
// of the replay group to end before it reads them (a variable for the
// tests).
var stableWait = 15 * time.Second

// replayTransactionalID is the transactional.id of the replays of topic that
// record their progress in group: "<replay group>:<dlq topic>", so
// kafkaworker-replay.<dlq>:<dlq> by default. Topic names cannot contain ':'.
func replayTransactionalID(group, topic string) string {
	return group + ":" + topic
}

// errReplayFenced marks the failure of a run that a newer run of the same
// replay fenced.
var errReplayFenced = errors.New("fenced by a newer replay")

// txnProducer opens a transactional producer on a client of its own (the
// transactional.id is part of the client's configuration). Creating it
// sends InitProducerId, which fences any earlier producer with the same id
// and aborts its open transaction.
func (g *globals) txnProducer(id string) (sarama.SyncProducer, error) {
	cfg, err := g.clientConn()
	if err != nil {
		return nil, err
	}
	producerConfig(false)(cfg.Sarama)
	s := cfg.Sarama
	s.Producer.Transaction.ID = id
	s.Producer.Transaction.Timeout = replayTxnTimeout
	// Transactions commit offsets with TxnOffsetCommit and read them with
	// OffsetFetch RequireStable: both want the protocol of Kafka 2.5.
	if !s.Version.IsAtLeast(sarama.V2_5_0_0) {
		s.Version = sarama.V2_5_0_0
	}
	p, err := sarama.NewSyncProducer(cfg.Brokers, s)
	if err != nil {
		return nil, fmt.Errorf("transactional producer %q: %w%s", id, err, txnHint(err, id))
	}
	return p, nil
}

// txnHint says what a cluster needs for an error that setting up or using
// transactions can meet, or "".
func txnHint(err error, id string) string {
	switch {
	case errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed):
		return fmt.Sprintf(": grant the principal Write on TransactionalId %q (or the prefix kafkaworker-replay.)", id)
	case errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return ": the broker wants a cluster permission: grant the principal IdempotentWrite on the cluster"
	case errors.Is(err, sarama.ErrGroupAuthorizationFailed):
		return ": grant the principal Read on the replay group"
	case errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable), errors.Is(err, sarama.ErrNotCoordinatorForConsumer):
		return ": the transaction coordinator is not available; on a cluster of fewer than 3 brokers set transaction.state.log.replication.factor and transaction.state.log.min.isr to at most the number of brokers"
	case errors.Is(err, sarama.ErrInvalidTransactionTimeout):
		return fmt.Sprintf(": the broker's transaction.max.timeout.ms is below the %s the replay asks for", replayTxnTimeout)
	}
	return ""
}

// stableOffsets returns the offsets group has committed on topic's
// partitions, as read_committed consumers see them: with RequireStable,
// offsets a transaction has committed but not yet completed make the broker
// answer UNSTABLE_OFFSET_COMMIT instead of an offset that could still be
// aborted, and stableOffsets asks again until wait has passed.
func (c *conn) stableOffsets(ctx context.Context, group, topic string, parts []int32, wait time.Duration) (map[int32]int64, error) {
	deadline := time.Now().Add(wait)
	pause := func() error {
		t := time.NewTimer(100 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for attempt := 0; ; attempt++ {
		got, unstable, err := c.fetchOffsets(group, topic, parts)
		if err != nil && attempt < 3 && (errors.Is(err, sarama.ErrNotCoordinatorForConsumer) || errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable) || errors.Is(err, sarama.ErrOffsetsLoadInProgress)) {
			_ = c.client.RefreshCoordinator(group)
			if err := pause(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("committed offsets of group %q: %w", group, err)
		}
		if !unstable {
			return got, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("replay group %q has offsets in a transaction still open after %s (a replay of %s is committing, or one died and its transaction times out within %s): try again", group, wait, topic, replayTxnTimeout)
		}
		if err := pause(); err != nil {
			return nil, err
		}
	}
}

// fetchOffsets is one OffsetFetch of group's commits on topic's parts,
// RequireStable when the protocol version has it (Kafka 2.5); unstable
// reports an UNSTABLE_OFFSET_COMMIT answer.
func (c *conn) fetchOffsets(group, topic string, parts []int32) (map[int32]int64, bool, error) {
	coordinator, err := c.client.Coordinator(group)
	if err != nil {
		return nil, false, err
	}
	req := sarama.NewOffsetFetchRequest(c.client.Config().Version, group, map[string][]int32{topic: parts})
	req.RequireStable = req.Version >= 7
	resp, err := coordinator.FetchOffset(req)
	if err != nil {
		_ = c.client.RefreshCoordinator(group)
		return nil, false, err
	}
	switch gerr := resp.GroupError(); {
	case errors.Is(gerr, sarama.ErrGroupIDNotFound):
		return map[int32]int64{}, false, nil // never committed
	case errors.Is(gerr, sarama.ErrUnstableOffsetCommit):
		return nil, true, nil
	case !errors.Is(gerr, sarama.ErrNoError):
		return nil, false, gerr
	}
	out := map[int32]int64{}
	for _, p := range parts {
		b := resp.GetBlock(topic, p)
		switch {
		case b == nil:
		case errors.Is(b.Err, sarama.ErrUnstableOffsetCommit):
			return nil, true, nil
		case !errors.Is(b.Err, sarama.ErrNoError):
			return nil, false, fmt.Errorf("%s/%d: %w", topic, p, b.Err)
		case b.Offset >= 0:
			out[p] = b.Offset
		}
	}
	return out, false, nil
}

// sendPending begins a transaction unless one is open, and sends the
// batch's records not sent in it yet.
func (r *replayer) sendPending() error {
	if !r.inTxn {
		if err := r.prod.BeginTxn(); err != nil {
			return err
		}
		r.inTxn, r.txnStart = true, time.Now()
	}
	if r.unsent < len(r.batch) {
		msgs := r.batch[r.unsent:]
		r.unsent = len(r.batch) // sent or failed: a failure aborts the transaction
		if err := r.prod.SendMessages(msgs); err != nil {
			return sendError(err)
		}
	}
	return nil
}

// commitTxn sends what is left of the batch and commits it with the replay
// group's offsets (how far reading got) in one transaction.
func (r *replayer) commitTxn() error {
	if err := r.sendPending(); err != nil {
		return err
	}
	offsets := r.progress()
	if len(offsets) > 0 {
		pom := make([]*sarama.PartitionOffsetMetadata, 0, len(offsets))
		for p, o := range offsets {
			pom = append(pom, &sarama.PartitionOffsetMetadata{Partition: p, Offset: o, LeaderEpoch: -1})
		}
		// The replay is not a member of its group: generation -1, no
		// member id, as Kafka's admin commits.
		if err := r.prod.AddOffsetsToTxnWithGroupMetadata(map[string][]*sarama.PartitionOffsetMetadata{r.topic: pom}, sarama.NewConsumerGroupMetadata(r.group)); err != nil {
			return err
		}
	}
	if err := r.prod.CommitTxn(); err != nil {
		return err
	}
	r.inTxn = false
	r.sent += len(r.batch)
	r.batch, r.unsent = r.batch[:0], 0
	for p, o := range offsets {
		r.commit[p] = o
	}
	return nil
}

// progress returns the replay group's offsets that reading moved.
func (r *replayer) progress() map[int32]int64 {
	out := map[int32]int64{}
	for p, o := range r.pos {
		if c, ok := r.commit[p]; !ok || c != o {
			out[p] = o
		}
	}
	return out
}

// settle takes the outcome of a transaction step. On an error the producer
// recovers from, the transaction is aborted (none of its records reach a
// read_committed consumer, the group's offsets stay) and the whole batch
// is sent again in a new one, up to replayAttempts times. A fatal error
// (fenced, not authorised, an outcome the producer cannot know) ends the
// replay: nothing is sent twice either way.
func (r *replayer) settle(err error) error {
	for attempt := 1; err != nil; attempt++ {
		if ferr := r.fatal(err); ferr != nil {
			return ferr
		}
		if aerr := r.prod.AbortTxn(); aerr != nil {
			if ferr := r.fatal(aerr); ferr != nil {
				return ferr
			}
			r.failed = true
			return fmt.Errorf("transaction failed (%v), and so did its abort: %w; run the same command to resume (it aborts this transaction if it is still open)", err, aerr)
		}
		r.inTxn = false
		if attempt >= replayAttempts {
			r.failed = true
			return fmt.Errorf("transaction aborted %d times, the last on: %w%s; none of its records is committed", attempt, err, txnHint(err, r.txnID))
		}
		// A message is sent once: send copies in the new transaction.
		for i, m := range r.batch {
			r.batch[i] = &sarama.ProducerMessage{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers}
		}
		r.unsent = 0
		err = r.commitTxn()
	}
	return nil
}

// fatal returns the error that ends the replay when err left the producer
// unusable, or nil when aborting the transaction recovers.
func (r *replayer) fatal(err error) error {
	if errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) {
		r.failed = true
		return fmt.Errorf("%w: another replay of %s into group %s started (transactional id %q); this run's open transaction was aborted after %d dead letter(s) committed, and the other run resumes from there",
			errReplayFenced, r.topic, r.group, r.txnID, r.sent)
	}
	if r.prod.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		r.failed = true
		return fmt.Errorf("transaction failed: %w%s; none of its records is committed", err, txnHint(err, r.txnID))
	}
	return nil
}
