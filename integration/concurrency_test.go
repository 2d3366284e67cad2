package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/worker"
)

// On a 2-partition topic with many keys and a slow handler, the worker runs
// far more than 2 handlers at once, and its throughput follows.
func TestConcurrencyBeyondPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const n, keys, latency = 2000, 200, 20 * time.Millisecond
	b.produceKeyed(t, n, keys)

	rec := newRecorder()
	rec.delay = func(*handler.Message) time.Duration { return latency }
	cfg := b.config()
	cfg.Concurrency = 64
	began := time.Now()
	w := start(t, cfg, rec)
	testutil.WaitFor(t, time.Minute, "all messages handled", func() bool { return rec.handled.Load() >= n })
	elapsed := time.Since(began)
	w.stop(t)

	if distinct, dupes := rec.check(t); distinct != n || dupes != 0 {
		t.Fatalf("handled %d distinct with %d duplicates, want %d and 0", distinct, dupes, n)
	}
	peak := rec.peak.Load()
	// Two partitions handled one at a time would need n*latency/2 = 20s.
	serial := time.Duration(n/2) * latency
	t.Logf("peak concurrency %d, elapsed %v (one-per-partition would take %v)", peak, elapsed, serial)
	if peak < 32 {
		t.Errorf("peak concurrency %d on 2 partitions, want at least 32 of the 64 allowed", peak)
	}
	if elapsed > serial/4 {
		t.Errorf("took %v, want well under a quarter of the one-per-partition time %v", elapsed, serial)
	}
}

// A stuck key holds only itself: every other key of the same partition,
// however many and whatever slot a hash would give them, completes while it
// is stuck, with a pool far smaller than the number of keys. Its own later
// messages wait, and nothing at or after its offset is committed until it is
// released.
func TestStuckKeyDoesNotBlockOtherKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const keys, perKey = 64, 10
	b.produceKeyed(t, keys*perKey, keys)

	release := make(chan struct{})
	rec := newRecorder()
	var stuckOnce sync.Once
	stuck := make(chan struct{})
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Key) == "k0" {
			stuckOnce.Do(func() { close(stuck) })
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return rec.Handle(ctx, m)
	})
	cfg := b.config()
	cfg.Concurrency = 4
	w := start(t, cfg, h)

	<-stuck
	others := (keys - 1) * perKey
	testutil.WaitFor(t, 30*time.Second, "every other key handled while k0 is stuck", func() bool {
		return rec.handled.Load() >= int64(others)
	})
	if got := rec.handled.Load(); got != int64(others) {
		t.Fatalf("handled %d messages while k0 was stuck, want exactly the %d of other keys", got, others)
	}
	// k0 is the first message produced (offset 0): nothing may be committed.
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if com[0] > 0 {
		t.Fatalf("committed offset %d while offset 0 is still being handled", com[0])
	}

	close(release)
	testutil.WaitFor(t, 30*time.Second, "k0 handled after release", func() bool { return rec.handled.Load() >= keys*perKey })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if distinct, dupes := rec.check(t); distinct != keys*perKey || dupes != 0 {
		t.Fatalf("handled %d distinct with %d duplicates, want %d and 0", distinct, dupes, keys*perKey)
	}
}

// In partition mode a partition runs one message at a time, in offset
// order, while partitions run side by side.
func TestPartitionOrdering(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	const n = 600
	b.produceKeyed(t, n, 30)

	var mu sync.Mutex
	active := map[int32]int{}
	lastOffset := map[int32]int64{}
	var violations []string
	rec := newRecorder()
	rec.delay = func(*handler.Message) time.Duration { return 2 * time.Millisecond }
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		mu.Lock()
		active[m.Partition]++
		if active[m.Partition] > 1 {
			violations = append(violations, fmt.Sprintf("p%d ran %d at once", m.Partition, active[m.Partition]))
		}
		if last, ok := lastOffset[m.Partition]; ok && m.Offset <= last {
			violations = append(violations, fmt.Sprintf("p%d offset %d after %d", m.Partition, m.Offset, last))
		}
		lastOffset[m.Partition] = m.Offset
		mu.Unlock()
		err := rec.Handle(ctx, m)
		mu.Lock()
		active[m.Partition]--
		mu.Unlock()
		return err
	})
	cfg := b.config()
	cfg.Ordering = worker.OrderByPartition
	w := start(t, cfg, h)
	testutil.WaitFor(t, time.Minute, "all handled", func() bool { return rec.handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if len(violations) > 0 {
		t.Fatalf("%d violations, first: %v", len(violations), violations[0])
	}
	if rec.peak.Load() < 2 {
		t.Errorf("peak %d: partitions did not run side by side", rec.peak.Load())
	}
}

// In none mode, messages of one key run concurrently.
func TestNoOrdering(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 200
	if err := b.cluster.ProduceN(ctx(t), b.topic, n, func(i int) ([]byte, []byte) {
		return []byte("same"), fmt.Appendf(nil, "v%d", i)
	}); err != nil {
		t.Fatal(err)
	}
	var handled, active, peak int64
	var mu sync.Mutex
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		mu.Lock()
		active++
		peak = max(peak, active)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		active--
		handled++
		mu.Unlock()
		return nil
	})
	cfg := b.config()
	cfg.Ordering = worker.OrderNone
	cfg.Concurrency = 16
	w := start(t, cfg, h)
	testutil.WaitFor(t, time.Minute, "all handled", func() bool { mu.Lock(); defer mu.Unlock(); return handled >= n })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if peak < 8 {
		t.Errorf("peak %d for one key in none mode, want concurrency (16) or near it", peak)
	}
}
