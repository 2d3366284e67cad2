package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/retry"
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

// A *BatchError routes each message on its own: successes are done once,
// a message that fails once is retried in place, one that keeps failing
// goes through the retry tier, a permanent failure is dead-lettered; the
// later messages of a key whose message failed in place are held back and
// handled again after it, so each key's messages succeed in order.
func TestBatchPartialFailureRouting(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	// Per key k0..k7: seq 0..9; some seqs fail in a set way, by value.
	const keys, perKey = 8, 10
	fate := func(key, seq int) string {
		switch {
		case key == 1 && seq == 3:
			return "flaky" // fails its first delivery only: retried in place
		case key == 2 && seq == 5:
			return "tier" // fails on the source topic: through the tier
		case key == 3 && seq == 7:
			return "dead" // fails permanently: dead-lettered
		case key == 4 && seq == 0:
			return "flaky"
		}
		return "ok"
	}
	err := b.cluster.ProduceN(ctx(t), b.topic, keys*perKey, func(i int) ([]byte, []byte) {
		k, seq := i%keys, i/keys
		return fmt.Appendf(nil, "k%d", k), fmt.Appendf(nil, "k%d/%d/%s", k, seq, fate(k, seq))
	})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	delivered := map[string]int{} // deliveries per value
	lastOK := map[string]int{}    // per value: the sequence number of its last success
	var events int
	var batchesWithFailure atomic.Int64
	h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		mu.Lock()
		defer mu.Unlock()
		results := make([]error, len(msgs))
		for i, m := range msgs {
			v := string(m.Value)
			what := strings.Split(v, "/")[2]
			delivered[v]++
			events++
			switch {
			case what == "flaky" && delivered[v] == 1:
				results[i] = errors.New("flaky: first delivery fails")
			case what == "tier" && !strings.Contains(m.Topic, ".retry."):
				results[i] = errors.New("fails until retried from the tier")
			case what == "dead":
				results[i] = retry.Permanent(errors.New("poison"))
			default:
				lastOK[v] = events
			}
		}
		if handler.BatchResult(results) != nil {
			batchesWithFailure.Add(1)
		}
		return handler.BatchResult(results)
	})
	cfg := b.retryConfig(2, 200*time.Millisecond)
	cfg.BatchMax, cfg.BatchWait = 100, 20*time.Millisecond
	w := startBatch(t, cfg, h)

	dlq := b.waitRecords(t, b.dlqTopic(), 1)
	if got := string(dlq[0].Value); got != "k3/7/dead" {
		t.Fatalf("dead-lettered %q, want k3/7/dead", got)
	}
	tier := b.waitRecords(t, b.tierTopic(1), 1)
	if got := string(tier[0].Value); got != "k2/5/tier" {
		t.Fatalf("sent to the tier %q, want k2/5/tier", got)
	}
	b.waitAllCommitted(t, b.topic, b.tierTopic(1))
	w.stop(t)

	mu.Lock()
	defer mu.Unlock()
	// Every message but the dead one succeeded, and each key's last
	// successes (what stands) came in seq order; the one sent to the tier
	// freed its key when it was forwarded, as with a Handler, and
	// succeeded later from the tier.
	for k := range keys {
		prev := 0
		for seq := range perKey {
			v := fmt.Sprintf("k%d/%d/%s", k, seq, fate(k, seq))
			if v == "k3/7/dead" {
				continue
			}
			at, ok := lastOK[v]
			if !ok {
				t.Fatalf("%s never succeeded", v)
			}
			if v == "k2/5/tier" {
				continue
			}
			if at < prev {
				t.Errorf("%s succeeded before an earlier message of its key", v)
			}
			prev = at
		}
	}
	want := map[string]int{"k1/3/flaky": 2, "k4/0/flaky": 2, "k2/5/tier": 3, "k3/7/dead": 1}
	for v, n := range want {
		if delivered[v] != n {
			t.Errorf("%s delivered %d times, want %d", v, delivered[v], n)
		}
	}
	// Held back: the later messages of a key whose message failed in
	// place in their batch are delivered again (at most once per failure
	// in place before them); every other message exactly once, including
	// those after the dead-lettered one, which frees its key at once.
	heldBack := 0
	for v, n := range delivered {
		var k, seq int
		fmt.Sscanf(v, "k%d/%d/", &k, &seq)
		behindInPlace := (k == 1 && seq > 3) || (k == 4 && seq > 0) || (k == 2 && seq > 5)
		switch {
		case want[v] > 0:
		case behindInPlace && n <= 2:
			heldBack += n - 1
		case n != 1:
			t.Errorf("%s delivered %d times, want once", v, n)
		}
	}
	if heldBack == 0 || batchesWithFailure.Load() == 0 {
		t.Errorf("no message held back behind a failure in place (%d batches with failures)", batchesWithFailure.Load())
	}
}

// HandleBatch's BatchError of the wrong length fails the whole batch with
// a BatchLengthError, and the messages are retried, not lost; Produce in a
// batch handler says it is not supported.
func TestBatchErrorOfWrongLengthRetriesTheBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 20
	b.produceKeyed(t, n, 4)

	var calls atomic.Int64
	var done atomic.Int64
	var produceErr atomic.Value
	h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		if calls.Add(1) == 1 {
			produceErr.Store(fmt.Sprint(worker.Produce(ctx, &producer.Message{Topic: "x"})))
			return &handler.BatchError{Errs: make([]error, len(msgs)+1)}
		}
		done.Add(int64(len(msgs)))
		return nil
	})
	cfg := b.config()
	cfg.BatchMax, cfg.BatchWait = 100, 50*time.Millisecond
	cfg.RetryLocalAttempts = 5
	var logs testutil.Logs
	w := startBatch(t, cfg, h, worker.WithLogger(logs.Logger()))
	testutil.WaitFor(t, 30*time.Second, "all messages handled", func() bool { return done.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	// The first batch failed whole: each key's first message is retried
	// in place (logged with the BatchLengthError), its later ones held
	// back behind it.
	retried := logs.Find(slog.LevelWarn, "handler failed; retrying in place")
	if len(retried) < 1 || len(retried) > 4 {
		t.Fatalf("%d messages logged as retried in place, want 1 to 4 (one per key of the first batch)", len(retried))
	}
	for _, r := range retried {
		if got := testutil.Attr(r, "error"); !strings.Contains(got, "HandleBatch returned a *BatchError with") {
			t.Errorf("retry logged error %q, want the BatchLengthError", got)
		}
	}
	if got := produceErr.Load(); got != fmt.Sprint(worker.ErrProduceInBatch) {
		t.Errorf("Produce in a batch handler: %v, want ErrProduceInBatch", got)
	}
	if done.Load() != n {
		t.Errorf("done %d, want %d", done.Load(), n)
	}
}

// A retry tier's records reach a batch handler no earlier than their due
// times, and a record due later holds back its key's later records,
// already due, in key order; each is handled once.
func TestBatchTierDueTimesKeepKeyOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	// The worker runs first (a warm-up record handled), so the due times
	// below are measured from when its batches can start.
	b.produceToTier1(t, b.tierRecord("w/0", "1", strconv.FormatInt(time.Now().UnixMilli(), 10)))
	type rec struct {
		key, value string
		after      time.Duration
	}
	plan := []rec{
		{"a", "a/0", 800 * time.Millisecond}, {"b", "b/0", 0}, {"a", "a/1", 0},
		{"b", "b/1", 400 * time.Millisecond}, {"c", "c/0", 0}, {"a", "a/2", 0},
		// A later record due sooner (a capped far-future due time, a
		// skewed clock) still waits for its key's earlier one.
		{"d", "d/0", 800 * time.Millisecond}, {"d", "d/1", 200 * time.Millisecond},
		// x/0 fails once in place and backs off for 500ms: x/1, due
		// before that, waits for it.
		{"x", "x/0", 0}, {"x", "x/1", 150 * time.Millisecond},
	}
	var mu sync.Mutex
	at := map[string]time.Time{}
	var order []string
	failedOnce := false
	h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		mu.Lock()
		defer mu.Unlock()
		errs := make([]error, len(msgs))
		failedKey := map[string]bool{}
		for i, m := range msgs {
			v := string(m.Value)
			if v == "x/0" && !failedOnce {
				failedOnce, errs[i] = true, errors.New("fails once")
			}
			if errs[i] != nil || failedKey[string(m.Key)] { // held back behind it: delivered again
				failedKey[string(m.Key)] = true
				continue
			}
			if _, dup := at[v]; dup {
				t.Errorf("%s handled twice", v)
			}
			at[v] = time.Now()
			order = append(order, v)
		}
		return handler.BatchResult(errs)
	})
	cfg := b.retryConfig(3, 5*time.Second)
	cfg.RetryBackoffInitial, cfg.RetryBackoffMax = 500*time.Millisecond, 500*time.Millisecond
	cfg.BatchMax, cfg.BatchWait = 100, 10*time.Millisecond
	w := startBatch(t, cfg, h)
	testutil.WaitFor(t, 15*time.Second, "the warm-up record handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(at) == 1
	})
	now := time.Now()
	// dueAt is a record's due time as its kw-not-before header carries it:
	// in whole milliseconds, the precision the worker keeps it to.
	dueAt := func(after time.Duration) time.Time { return time.UnixMilli(now.Add(after).UnixMilli()) }
	for _, p := range plan {
		r := b.tierRecord(p.value, "1", strconv.FormatInt(dueAt(p.after).UnixMilli(), 10))
		r.Key = []byte(p.key)
		if _, err := b.cluster.Produce(ctx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 15*time.Second, "all tier records handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(at) == len(plan)+1
	})
	b.waitAllCommitted(t, b.tierTopic(1))
	w.stop(t)

	mu.Lock()
	defer mu.Unlock()
	for _, p := range plan {
		if got := at[p.value]; got.Before(dueAt(p.after)) {
			t.Errorf("%s handled %v before its due time", p.value, dueAt(p.after).Sub(got))
		}
	}
	pos := map[string]int{}
	for i, v := range order {
		if _, seen := pos[v]; !seen {
			pos[v] = i
		}
	}
	for _, pair := range [][2]string{{"a/0", "a/1"}, {"a/1", "a/2"}, {"b/0", "b/1"}, {"d/0", "d/1"}, {"x/0", "x/1"}} {
		if pos[pair[0]] > pos[pair[1]] {
			t.Errorf("%s handled after %s: key order broken (order %v)", pair[0], pair[1], order)
		}
	}
	if at["a/1"].Before(at["a/0"]) || at["a/1"].Before(dueAt(800*time.Millisecond)) {
		t.Errorf("a/1 (due at once) ran before a/0 (due in 800ms) was done: order %v", order)
	}
}

// Batch workers join and leave mid-stream (cooperative-sticky and range):
// nothing is lost or handled twice, each key's messages are handled in
// order, and no key is in two batches at once, across the workers too.
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
