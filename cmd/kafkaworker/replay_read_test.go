package main

import (
	"cmp"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// readTopic returns the records of topic through a franz-go client of its
// own, in partition and offset order: with committed, as a read_committed
// consumer sees them (up to the last stable offset, aborted transactions
// left out), else as a read_uncommitted one (up to the high watermark, open
// and aborted transactions included). Transaction markers are read to know
// where a partition ends but not returned. (kafkatest.ReadAll waits for a
// record at the end offset - 1, which a topic ending in a marker never
// delivers.)
func (e *env) readTopic(topic string, committed bool) []kafkatest.ReadRecord {
	e.t.Helper()
	var ends kadm.ListedOffsets
	var err error
	if committed {
		ends, err = e.admin.ListCommittedOffsets(e.ctx, topic)
	} else {
		ends, err = e.admin.ListEndOffsets(e.ctx, topic)
	}
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		e.t.Fatalf("end offsets of %s: %v", topic, err)
	}
	parts, end, next := map[int32]kgo.Offset{}, map[int32]int64{}, map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			parts[o.Partition] = kgo.NewOffset().AtStart()
			end[o.Partition] = o.Offset
		}
	})
	if len(parts) == 0 {
		return nil
	}
	opts := []kgo.Opt{kgo.SeedBrokers(e.cluster.Addrs()...), kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}), kgo.KeepControlRecords()}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	var out []kafkatest.ReadRecord
	for {
		done := true
		for p, o := range end {
			if next[p] < o {
				done = false
			}
		}
		if done {
			break
		}
		fetches := cl.PollFetches(e.ctx)
		if err := e.ctx.Err(); err != nil {
			e.t.Fatalf("reading %s (committed %v): %v; got to %v of %v", topic, committed, err, next, end)
		}
		fetches.EachError(func(t string, p int32, err error) { e.t.Fatalf("reading %s/%d: %v", t, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() || r.Offset >= end[r.Partition] {
				return
			}
			rr := kafkatest.ReadRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
				Headers: map[string]string{}, Timestamp: r.Timestamp}
			for _, h := range r.Headers {
				rr.Headers[h.Key] = string(h.Value)
			}
			out = append(out, rr)
		})
	}
	sortRecords(out)
	return out
}

func sortRecords(rs []kafkatest.ReadRecord) {
	slices.SortFunc(rs, func(a, b kafkatest.ReadRecord) int {
		if a.Partition != b.Partition {
			return cmp.Compare(a.Partition, b.Partition)
		}
		return cmp.Compare(a.Offset, b.Offset)
	})
}

// values counts the records by value.
func values(rs []kafkatest.ReadRecord) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		out[string(r.Value)]++
	}
	return out
}
