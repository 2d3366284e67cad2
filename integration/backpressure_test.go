package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// A stuck message holds its partition to WORKER_MAX_IN_FLIGHT messages: the
// worker takes no more from it until the stuck one finishes, so memory stays
// bounded however large the backlog. Another partition keeps flowing.
func TestBudgetBoundsAStuckPartitionOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const budget, perPartition = 20, 500
	var recs []kafkatest.Record
	for p := int32(0); p < 2; p++ {
		for i := range perPartition {
			// Distinct keys, so only the budget (not key order) holds them.
			recs = append(recs, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: p,
				Key: []byte{byte(p), byte(i >> 8), byte(i)}, Value: []byte{byte(p)}})
		}
	}
	if _, err := b.cluster.Produce(ctx(t), recs...); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	var mu sync.Mutex
	handled := map[int32]int{}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if m.Partition == 0 && m.Offset == 0 {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mu.Lock()
		handled[m.Partition]++
		mu.Unlock()
		return nil
	})
	count := func(p int32) int { mu.Lock(); defer mu.Unlock(); return handled[p] }

	cfg := b.config()
	cfg.MaxInFlight = budget
	cfg.Concurrency = 8
	w := start(t, cfg, h)

	waitFor(t, 30*time.Second, "partition 1 fully handled", func() bool { return count(1) == perPartition })
	waitFor(t, 30*time.Second, "partition 0 up to its budget", func() bool { return count(0) == budget-1 })
	// Partition 1 finished hundreds of messages meanwhile, so partition 0 had
	// every chance to take more; it must not have.
	if got := count(0); got != budget-1 {
		t.Fatalf("partition 0 handled %d messages behind a stuck offset 0, want exactly budget-1 = %d", got, budget-1)
	}
	close(release)
	waitFor(t, 30*time.Second, "partition 0 handled after release", func() bool { return count(0) == perPartition })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
}
