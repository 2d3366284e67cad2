package integration

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// stuckHandler blocks the messages stuck picks until release is closed (or
// their context ends) and counts every other delivery per partition and
// per value.
type stuckHandler struct {
	stuck   func(*handler.Message) bool
	release chan struct{}
	mu      sync.Mutex
	handled map[int32]int
	seen    map[string]int
	dupes   atomic.Int64
}

func newStuckHandler(stuck func(*handler.Message) bool) *stuckHandler {
	return &stuckHandler{stuck: stuck, release: make(chan struct{}), handled: map[int32]int{}, seen: map[string]int{}}
}

func (h *stuckHandler) Handle(ctx context.Context, m *handler.Message) error {
	if h.stuck(m) {
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handled[m.Partition]++
	if h.seen[string(m.Value)]++; h.seen[string(m.Value)] > 1 {
		h.dupes.Add(1)
	}
	return nil
}

func (h *stuckHandler) count(p int32) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handled[p]
}

// A stuck message holds back only its own key: WORKER_MAX_IN_FLIGHT bounds
// the messages held in memory, and a message that finished is no longer
// held (only its offset is, in the done-set), so the stuck one's partition
// keeps flowing far past the budget. The committed offset stays at the stuck
// message, and the in-flight gauge never exceeds the budget.
func TestStuckMessageHoldsOnlyItsKeyInMemory(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const budget, perPartition = 20, 500
	var recs []kafkatest.Record
	for p := int32(0); p < 2; p++ {
		for i := range perPartition {
			// Distinct keys, so only the budget (not key order) could hold them.
			recs = append(recs, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: p,
				Key: []byte{byte(p), byte(i >> 8), byte(i)}, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	if _, err := b.cluster.Produce(ctx(t), recs...); err != nil {
		t.Fatal(err)
	}
	h := newStuckHandler(func(m *handler.Message) bool { return m.Partition == 0 && m.Offset == 0 })
	cfg := b.config()
	cfg.MaxInFlight = budget
	cfg.Concurrency = 8
	reg := prometheus.NewRegistry()
	w := start(t, cfg, h, worker.WithRegisterer(reg))

	var peak float64
	testutil.WaitFor(t, 30*time.Second, "both partitions handled except the stuck message", func() bool {
		peak = max(peak, gauge(t, reg, worker.MetricInFlight, b.group))
		return h.count(1) == perPartition && h.count(0) == perPartition-1
	})
	testutil.WaitFor(t, 10*time.Second, "the stuck message counted in flight", func() bool {
		peak = max(peak, gauge(t, reg, worker.MetricInFlight, b.group))
		return gauge(t, reg, worker.MetricInFlight, b.group) == 1
	})
	if peak > 2*budget { // the gauge sums both partitions
		t.Fatalf("in-flight gauge reached %v, above 2 partitions × the budget %d", peak, budget)
	}
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if com[0] != 0 {
		t.Fatalf("partition 0 committed at %d past its stuck offset 0", com[0])
	}
	close(h.release)
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
}

// The trade-off: the stuck key's own later messages are held in memory
// behind it and count against the budget, so a stuck key with more than
// WORKER_MAX_IN_FLIGHT messages waiting stalls its partition (and only
// that one).
func TestStuckHotKeyStallsOnlyItsPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const budget = 20
	var recs []kafkatest.Record
	for i := range 3 * budget { // one key, all behind its stuck first message
		recs = append(recs, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: 0, Key: []byte("hot"), Value: fmt.Appendf(nil, "hot/%d", i)})
	}
	for i := range 100 { // then other keys, which cannot be taken in
		recs = append(recs, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: 0, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "k%d/0", i)})
		recs = append(recs, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: 1, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "p1k%d/0", i)})
	}
	if _, err := b.cluster.Produce(ctx(t), recs...); err != nil {
		t.Fatal(err)
	}
	h := newStuckHandler(func(m *handler.Message) bool { return m.Partition == 0 && m.Offset == 0 })
	cfg := b.config()
	cfg.MaxInFlight = budget
	reg := prometheus.NewRegistry()
	w := start(t, cfg, h, worker.WithRegisterer(reg))
	testutil.WaitFor(t, 30*time.Second, "partition 1 handled and partition 0's intake blocked", func() bool {
		return h.count(1) == 100 && counterVal(t, reg, worker.MetricIntakeBlocked, b.group, "in_flight") > 0
	})
	if n := h.count(0); n != 0 {
		t.Fatalf("partition 0 handled %d messages while its hot key's first message was stuck; want 0", n)
	}
	testutil.WaitFor(t, 10*time.Second, "the budget held by the stuck key's messages", func() bool {
		return gauge(t, reg, worker.MetricInFlight, b.group) == budget
	})
	close(h.release)
	testutil.WaitFor(t, 30*time.Second, "partition 0 handled after release", func() bool { return h.count(0) == 3*budget+100 })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
}

// One message stuck indefinitely on a 1-partition topic of 200 keys, with
// default settings: at least 100,000 messages of the other keys are handled
// while it is stuck, what the worker holds stays bounded (in-flight gauge at
// most the budget, Go heap flat as the count grows), and after a graceful
// restart none of them is handled again.
func TestStuckMessageDoesNotStallItsPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n, keys = 200_000, 200
	err := b.cluster.ProduceN(ctx(t), b.topic, n, func(i int) ([]byte, []byte) {
		return fmt.Appendf(nil, "k%d", i%keys), fmt.Appendf(nil, "k%d/%d", i%keys, i/keys)
	})
	if err != nil {
		t.Fatal(err)
	}
	const stuckValue = "k7/10"
	h := newStuckHandler(func(m *handler.Message) bool { return string(m.Value) == stuckValue })
	cfg := b.config()
	cfg.MaxInFlight, cfg.Concurrency = worker.DefaultConfig().MaxInFlight, worker.DefaultConfig().Concurrency
	reg := prometheus.NewRegistry()
	w := start(t, cfg, h, worker.WithRegisterer(reg))

	var peakHeld float64
	var heapAt50k, heapAt100k uint64
	testutil.WaitFor(t, 2*time.Minute, "100,000 messages handled while one is stuck", func() bool {
		peakHeld = max(peakHeld, gauge(t, reg, worker.MetricInFlight, b.group))
		got := h.count(0)
		if heapAt50k == 0 && got >= 50_000 {
			heapAt50k = heapInUse()
		}
		return got >= 100_000
	})
	heapAt100k = heapInUse()
	// The stuck key's waiting messages split the done-set a range each:
	// before it outgrows the commit metadata, intake stops (and says so)
	// rather than dropping ranges a restart would handle again.
	testutil.WaitFor(t, 2*time.Minute, "intake stopped by the done-set's size", func() bool {
		peakHeld = max(peakHeld, gauge(t, reg, worker.MetricInFlight, b.group))
		return counterVal(t, reg, worker.MetricIntakeBlocked, b.group, "done_set") > 0
	})
	atLimit := h.count(0)
	if peakHeld > float64(cfg.MaxInFlight) {
		t.Fatalf("in-flight gauge reached %v, above WORKER_MAX_IN_FLIGHT %d", peakHeld, cfg.MaxInFlight)
	}
	t.Logf("handled while stuck: %d when the done-set limit stopped intake; peak in flight %v; "+
		"Go heap in use after a GC at 50,000 handled: %.1f MiB, at 100,000: %.1f MiB",
		atLimit, peakHeld, float64(heapAt50k)/(1<<20), float64(heapAt100k)/(1<<20))

	w.stop(t) // graceful: the done-set of everything finished behind the stuck one is committed
	before := h.count(0)
	w2 := start(t, cfg, h)
	close(h.release)
	b.waitCommitted(t, time.Minute)
	w2.stop(t)
	if dupes := h.dupes.Load(); dupes != 0 {
		t.Fatalf("%d messages handled again after the graceful restart (handled %d before it)", dupes, before)
	}
	if got := h.count(0); got != n {
		t.Fatalf("handled %d distinct messages in all, want %d", got, n)
	}
}

// heapInUse returns the Go heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
