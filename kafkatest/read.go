package kafkatest

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadAll returns every record in topic up to its current end offsets,
// ordered by partition, then offset: read_uncommitted, so records of
// aborted or still open transactions are included (ReadCommitted leaves
// them out). It reads with a client of its own, so it sees exactly what
// was acknowledged, and commits nothing.
func (c *Cluster) ReadAll(ctx context.Context, topic string) ([]ReadRecord, error) {
	recs, err := c.read(ctx, topic)
	if err != nil {
		return nil, err
	}
	var out []ReadRecord
	for _, r := range recs {
		if !r.Attrs.IsControl() {
			out = append(out, readRecord(r))
		}
	}
	return out, nil
}

// ReadCommitted returns what a read_committed consumer of topic sees up to
// its current end offsets: every record written outside a transaction or
// in one that committed, ordered by partition, then offset. A record of a
// transaction still open counts as not committed, so call it once the
// writers have stopped or been fenced. The outcome of each transaction is
// read from its marker in the log, not from the broker's own filtering.
func (c *Cluster) ReadCommitted(ctx context.Context, topic string) ([]ReadRecord, error) {
	recs, err := c.read(ctx, topic)
	if err != nil {
		return nil, err
	}
	// Walk each partition backwards: a transactional record belongs to the
	// first marker of its producer after it.
	type pp struct {
		part int32
		pid  int64
	}
	outcome := map[pp]bool{} // committed, per producer, as of the marker last seen walking back
	keep := make([]bool, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		k := pp{r.Partition, r.ProducerID}
		switch {
		case r.Attrs.IsControl():
			outcome[k] = isCommitMarker(r.Key)
		case !r.Attrs.IsTransactional():
			keep[i] = true
		default:
			committed, marked := outcome[k]
			keep[i] = marked && committed
		}
	}
	var out []ReadRecord
	for i, r := range recs {
		if keep[i] {
			out = append(out, readRecord(r))
		}
	}
	return out, nil
}

// isCommitMarker reads a control record's key (version int16, type int16):
// type 1 is a commit, 0 an abort.
func isCommitMarker(key []byte) bool {
	return len(key) >= 4 && binary.BigEndian.Uint16(key[2:4]) == 1
}

func readRecord(r *kgo.Record) ReadRecord {
	rr := ReadRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
		Headers: map[string]string{}, Timestamp: r.Timestamp}
	for _, h := range r.Headers {
		rr.Headers[h.Key] = string(h.Value)
	}
	return rr
}

// read returns every record of topic below its current end offsets,
// transaction markers included (so that a partition whose last record is
// a marker is read to its end), ordered by partition, then offset.
func (c *Cluster) read(ctx context.Context, topic string) ([]*kgo.Record, error) {
	end, err := c.EndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	parts := map[int32]kgo.Offset{}
	for p, e := range end {
		if e > 0 {
			parts[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.addrs...), kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.KeepControlRecords(), kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})}, c.clientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %q: %w", topic, err)
	}
	defer cl.Close()
	var out []*kgo.Record
	next := map[int32]int64{}
	for done := false; !done; {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafkatest: read %q: %w", topic, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				out = append(out, r)
			}
			next[r.Partition] = r.Offset + 1
		})
		done = true
		for p, e := range end {
			if e > 0 && next[p] < e {
				done = false
			}
		}
	}
	slices.SortFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out, nil
}
