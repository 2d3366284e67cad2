package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
