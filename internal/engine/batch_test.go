package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// lotRecorder is a batch handler that records each call's offsets, blocks
// while its gate is closed, and fails the offsets in failOnce on their
// first delivery.
type lotRecorder struct {
	mu       sync.Mutex
	lots     [][]int64
	gate     *latch
	failOnce map[int64]bool
}

func (r *lotRecorder) HandleBatch(ctx context.Context, msgs []*handler.Message) error {
	var offs []int64
	for _, m := range msgs {
		offs = append(offs, m.Offset)
	}
	r.mu.Lock()
	r.lots = append(r.lots, offs)
	errs := make([]error, len(msgs))
	for i, o := range offs {
		if r.failOnce[o] {
			delete(r.failOnce, o)
			errs[i] = errors.New("fails once")
		}
	}
	r.mu.Unlock()
	if r.gate != nil {
		select {
		case <-r.gate.done():
		case <-ctx.Done():
		}
	}
	return handler.BatchResult(errs)
}

func (r *lotRecorder) snapshot() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.lots)
}

// newBatchRig is newRig for a batch handler with lots of up to max,
// cut wait after the first message.
func newBatchRig(t *testing.T, h handler.BatchHandler, max int, wait time.Duration) *rig {
	r := newRig(t, handler.HandlerFunc(func(context.Context, *handler.Message) error {
		t.Error("a batch rig delivered a message singly")
		return nil
	}), nil)
	r.g.Batch = &Batch{Handler: h, Max: max, Wait: wait}
	return r
}

// A lot holds several messages of a key in offset order, and a key is in
// one lot at a time: when a full lot is cut, the key's later gathered
// messages wait for it rather than fill the next lot beside it.
func TestLotsNeverShareAKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &lotRecorder{gate: newLatch()}
		r := newBatchRig(t, rec, 3, time.Second)
		r.atCleanup(rec.gate.open)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "a", "a", "a", "a", "b") // offsets 0..5
		r.dispatch(c)
		synctest.Wait()
		if got := rec.snapshot(); got != "[[0 1 2]]" {
			t.Fatalf("first lot: %s, want [[0 1 2]] (a full lot cut at once)", got)
		}
		time.Sleep(time.Second) // WORKER_BATCH_WAIT: what waits is cut
		synctest.Wait()
		if got := rec.snapshot(); got != "[[0 1 2] [5]]" {
			t.Fatalf("after the wait: %s, want [[0 1 2] [5]]: a@3 and a@4 wait for a's lot", got)
		}
		rec.gate.open()
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := rec.snapshot(); got != "[[0 1 2] [5] [3 4]]" {
			t.Fatalf("after a's lot: %s, want [[0 1 2] [5] [3 4]]", got)
		}
		r.shutdown(t, c)
		if got := c.p.state.Snapshot().Marked; got != 6 {
			t.Fatalf("committable offset %d, want 6", got)
		}
	})
}

// A message that fails in place holds back its key's later messages in the
// lot: they run again after it, while the other keys' results stand.
func TestLotFailureHoldsBackItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &lotRecorder{failOnce: map[int64]bool{0: true}}
		r := newBatchRig(t, rec, 10, time.Second)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "a", "b") // offsets 0..2
		r.dispatch(c)
		synctest.Wait()
		time.Sleep(time.Second) // the wait cuts [0 1 2]
		synctest.Wait()
		if got := rec.snapshot(); got != "[[0 1 2]]" {
			t.Fatalf("lots %s, want [[0 1 2]]", got)
		}
		time.Sleep(5 * time.Second) // a@0's backoff (<= 100ms), then the wait cuts it with a@1 behind it
		synctest.Wait()
		if got := rec.snapshot(); got != "[[0 1 2] [0 1]]" {
			t.Fatalf("lots %s, want [[0 1 2] [0 1]]: a@1 held back behind a@0, b@2 done", got)
		}
		c.p.mu.Lock()
		heldIn := c.p.keys["a"].heldIn
		c.p.mu.Unlock()
		if heldIn != nil {
			t.Fatal("key a still names the settled lot that held it back: the lot, its messages and errors stay reachable")
		}
		r.shutdown(t, c)
		if got := c.p.state.Snapshot().Marked; got != 3 {
			t.Fatalf("committable offset %d, want 3", got)
		}
		// a@1's first result was not counted: three successes, one failure.
		if _, processed := r.g.Metrics.Totals(); processed[metricdef.Success] != 3 || processed[metricdef.Error] != 1 {
			t.Fatalf("processed %v (success, error, retry, dead letter), want 3 successes and 1 error", processed)
		}
	})
}

// Stopping drops what waits to be cut: it never starts, and stays
// uncommitted for the next owner.
func TestDrainDropsGatheredMessages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &lotRecorder{}
		r := newBatchRig(t, rec, 10, time.Minute)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "b")
		r.dispatch(c)
		synctest.Wait()
		r.shutdown(t, c)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := rec.snapshot(); got != "[]" {
			t.Fatalf("lots %s after the drain, want none", got)
		}
		if got := c.p.state.Snapshot().Marked; got != 0 {
			t.Fatalf("committable offset %d, want 0: nothing was handled", got)
		}
	})
}

// OrderNone: every ready message joins the next lot, whatever its key.
func TestLotsWithoutOrdering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &lotRecorder{}
		r := newBatchRig(t, rec, 2, 0)
		c := r.claim("t", 0)
		c.p.ordering = OrderNone
		c.claim.send(t, "a", "a", "a", "a", "a")
		r.dispatch(c)
		synctest.Wait()
		got := rec.snapshot()
		var sizes []int
		rec.mu.Lock()
		for _, l := range rec.lots {
			sizes = append(sizes, len(l))
		}
		rec.mu.Unlock()
		if slices.Max(sizes) != 2 || len(sizes) != 3 {
			t.Fatalf("lots %s, want two of 2 and one of 1 (no key order, wait 0)", got)
		}
		r.shutdown(t, c)
	})
}

// A batch handler that returns a typed nil *BatchError (var be
// *handler.BatchError; return be) fails its whole lot with
// handler.ErrNilBatchError, as a Handler's typed nil is a failure: the
// worker does not panic (the results are read outside callBatch's
// recover), the lot runs again, and everything is committed.
func TestLotWithATypedNilBatchErrorFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var calls [][]int64
		h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
			mu.Lock()
			defer mu.Unlock()
			var offs []int64
			for _, m := range msgs {
				offs = append(offs, m.Offset)
			}
			calls = append(calls, offs)
			var be *handler.BatchError // the mistake: a nil pointer returned as an error
			if len(calls) == 1 {
				return be
			}
			return nil
		})
		r := newBatchRig(t, h, 10, 0)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "b")
		r.dispatch(c)
		synctest.Wait()
		time.Sleep(5 * time.Second) // the in-place backoff
		synctest.Wait()
		mu.Lock()
		var again []int64
		for _, offs := range calls[1:] {
			again = append(again, offs...)
		}
		got := fmt.Sprint(calls)
		mu.Unlock()
		slices.Sort(again)
		if !strings.HasPrefix(got, "[[0 1] ") || fmt.Sprint(again) != "[0 1]" {
			t.Fatalf("calls %s, want [0 1], then 0 and 1 once more each: the typed nil fails the lot, whose messages run again", got)
		}
		r.shutdown(t, c)
		if got := c.p.state.Snapshot().Marked; got != 2 {
			t.Fatalf("committable offset %d, want 2", got)
		}
		if _, processed := r.g.Metrics.Totals(); processed[metricdef.Success] != 2 || processed[metricdef.Error] != 2 {
			t.Fatalf("processed %v (success, error, retry, dead letter), want 2 errors, then 2 successes", processed)
		}
	})
}
