package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/worker"
)

// startBatch runs a batch worker until stop (or the end of the test).
func startBatch(t *testing.T, cfg worker.Config, h handler.BatchHandler, opts ...worker.Option) *running {
	t.Helper()
	opts = append([]worker.Option{worker.WithLogger(testLogger(t))}, opts...)
	w, err := worker.NewBatch(cfg, h, opts...)
	if err != nil {
		t.Fatalf("worker.NewBatch: %v", err)
	}
	return runInBackground(t, w)
}

// batchWatch is a batch handler's checks: no key in two batches at once,
// each batch one partition's in offset order, and each key's messages
// handled in seq order (through the recorder).
type batchWatch struct {
	rec *recorder

	mu      sync.Mutex
	busy    map[string]bool // partition/key of the batches running now
	errs    []string
	batches int
	maxSize int
	sameKey int // batches that held several messages of one key
	running atomic.Int64
	peak    atomic.Int64
}

func newBatchWatch() *batchWatch {
	return &batchWatch{rec: newRecorder(), busy: map[string]bool{}}
}

func (w *batchWatch) failf(format string, args ...any) {
	w.errs = append(w.errs, fmt.Sprintf(format, args...))
}

// enter checks msgs and marks their keys busy; leave frees them.
func (w *batchWatch) enter(msgs []*handler.Message) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batches++
	w.maxSize = max(w.maxSize, len(msgs))
	keys := map[string]int{}
	for i, m := range msgs {
		if m.Partition != msgs[0].Partition || m.Topic != msgs[0].Topic {
			w.failf("batch mixes %s/%d with %s/%d", msgs[0].Topic, msgs[0].Partition, m.Topic, m.Partition)
		}
		if i > 0 && m.Offset <= msgs[i-1].Offset {
			w.failf("batch not in offset order: %d after %d", m.Offset, msgs[i-1].Offset)
		}
		keys[fmt.Sprintf("%d/%s", m.Partition, m.Key)]++
	}
	var mine []string
	several := false
	for k, n := range keys {
		if w.busy[k] {
			w.failf("key %s is in two batches at once", k)
		}
		w.busy[k] = true
		mine = append(mine, k)
		several = several || n > 1
	}
	if several {
		w.sameKey++
	}
	return mine
}

func (w *batchWatch) leave(keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		delete(w.busy, k)
	}
}

func (w *batchWatch) HandleBatch(ctx context.Context, msgs []*handler.Message) error {
	n := w.running.Add(1)
	defer w.running.Add(-1)
	for p := w.peak.Load(); n > p && !w.peak.CompareAndSwap(p, n); p = w.peak.Load() {
	}
	keys := w.enter(msgs)
	defer w.leave(keys)
	time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // the handler's work, not synchronisation
	for _, m := range msgs {
		if err := w.rec.Handle(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (w *batchWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Fatalf("%d batch violations, first: %s", len(w.errs), strings.Join(w.errs[:min(5, len(w.errs))], "; "))
	}
}

// A batch holds several messages of a key in offset order, a key is never
// in two batches at once, batches of different keys run concurrently, and
// every message is handled once, each key's in order.
func TestBatchKeyOrderAndNoKeyInTwoBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n, keys = 6000, 40
	b.produceKeyed(t, n, keys)

	bw := newBatchWatch()
	cfg := b.config()
	cfg.Concurrency = 16
	cfg.BatchMax, cfg.BatchWait = 50, 5*time.Millisecond
	w := startBatch(t, cfg, bw)
	testutil.WaitFor(t, time.Minute, "all messages handled", func() bool { return bw.rec.handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)

	bw.check(t)
	distinct, dupes := bw.rec.check(t)
	if distinct != n || dupes != 0 {
		t.Fatalf("handled %d distinct messages with %d duplicates, want %d and 0", distinct, dupes, n)
	}
	bw.mu.Lock()
	defer bw.mu.Unlock()
	if bw.maxSize < 2 || bw.maxSize > 50 {
		t.Errorf("largest batch %d, want 2..50 (WORKER_BATCH_MAX=50)", bw.maxSize)
	}
	if bw.sameKey == 0 {
		t.Errorf("no batch held two messages of one key (%d batches)", bw.batches)
	}
	if bw.peak.Load() < 2 {
		t.Errorf("peak concurrent batches %d: batches did not run concurrently", bw.peak.Load())
	}
	if bw.batches >= n/2 {
		t.Errorf("%d batches for %d messages: not batched", bw.batches, n)
	}
}

// With ordering by partition a batch is a run of consecutive offsets, and
// one partition's batches never overlap.
func TestBatchOrderByPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	const n = 3000
	b.produceKeyed(t, n, 30)

	var mu sync.Mutex
	next := map[int32]int64{}
	busy := map[int32]bool{}
	var errs []string
	var handled atomic.Int64
	h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		p := msgs[0].Partition
		mu.Lock()
		if busy[p] {
			errs = append(errs, fmt.Sprintf("partition %d in two batches at once", p))
		}
		busy[p] = true
		for _, m := range msgs {
			if m.Offset != next[p] {
				errs = append(errs, fmt.Sprintf("p%d: offset %d, want %d", p, m.Offset, next[p]))
			}
			next[p] = m.Offset + 1
		}
		mu.Unlock()
		time.Sleep(time.Millisecond) // the handler's work
		mu.Lock()
		busy[p] = false
		mu.Unlock()
		handled.Add(int64(len(msgs)))
		return nil
	})
	cfg := b.config()
	cfg.Ordering = worker.OrderByPartition
	cfg.BatchMax, cfg.BatchWait = 64, 2*time.Millisecond
	w := startBatch(t, cfg, h)
	testutil.WaitFor(t, time.Minute, "all messages handled", func() bool { return handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d violations, first: %s", len(errs), strings.Join(errs[:min(5, len(errs))], "; "))
	}
	if handled.Load() != n {
		t.Fatalf("handled %d, want %d", handled.Load(), n)
	}
}

func TestBatchRebalanceChurn(t *testing.T) {
	t.Parallel()
	for _, strategy := range []worker.RebalanceStrategy{worker.StrategyRange, worker.StrategyCooperativeSticky} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 6)
			const n, keys = 12000, 300
			b.produceKeyed(t, n, keys)

			bw := newBatchWatch()
			cfg := b.config()
			cfg.RebalanceStrategy = strategy
			cfg.Concurrency = 8
			cfg.BatchMax, cfg.BatchWait = 40, 5*time.Millisecond
			at := func(k int64) {
				testutil.WaitFor(t, time.Minute, "progress", func() bool { return bw.rec.handled.Load() >= k })
			}
			w1 := startBatch(t, cfg, bw)
			at(1500)
			w2 := startBatch(t, cfg, bw)
			at(4000)
			w3 := startBatch(t, cfg, bw)
			at(6500)
			w1.stop(t)
			at(9000)
			w2.stop(t)
			testutil.WaitFor(t, time.Minute, "all handled", func() bool {
				bw.rec.mu.Lock()
				defer bw.rec.mu.Unlock()
				return len(bw.rec.seen) >= n
			})
			b.waitCommitted(t, 30*time.Second)
			w3.stop(t)

			bw.check(t)
			if distinct, dupes := bw.rec.check(t); distinct != n || dupes != 0 {
				t.Fatalf("handled %d distinct messages, %d of them twice; want %d and 0", distinct, dupes, n)
			}
		})
	}
}

// A stop always ends with a batch handler too: one that ignores its
// cancelled context is waited for until WORKER_SHUTDOWN_TIMEOUT, its
// messages stay uncommitted, and what waited to be batched never starts;
// a new worker then handles every message.
func TestBatchStopEndsWhenTheHandlerIgnoresItsContext(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produceKeyed(t, 10, 10) // ten keys: batches of distinct keys
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var entered atomic.Bool
	var calls atomic.Int64
	h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		calls.Add(1)
		entered.Store(true)
		<-release // ignores ctx
		return nil
	})
	cfg := b.config()
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.BatchMax, cfg.BatchWait = 4, time.Hour // 8 messages in two full batches, 2 wait for the hour
	w := startBatch(t, cfg, h)
	testutil.WaitFor(t, 30*time.Second, "the batches running", func() bool { return calls.Load() == 2 })
	took := w.stopTimed(t)
	if took < cfg.ShutdownTimeout || took > cfg.ShutdownTimeout+5*time.Second {
		t.Fatalf("Run returned after %v, want between the shutdown timeout %v and 5s more", took, cfg.ShutdownTimeout)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d batches started, want 2: what waited to be batched must not start on a stop", calls.Load())
	}
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if com[0] > 0 {
		t.Fatalf("committed offset %d: the abandoned batches' messages must stay uncommitted", com[0])
	}

	bw := newBatchWatch()
	bw.rec.allowRedelivery = true
	cfg.BatchWait = 10 * time.Millisecond
	w2 := startBatch(t, cfg, bw)
	testutil.WaitFor(t, 30*time.Second, "all messages handled by the next worker", func() bool { return bw.rec.handled.Load() >= 10 })
	b.waitCommitted(t, 30*time.Second)
	w2.stop(t)
	bw.check(t)
}
