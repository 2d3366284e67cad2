package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Attacks on lazy keys (lazy.go): a stretch admitted without key FIFOs
// must keep each key's order however it ends: a failure, its budget, the
// watchdog, or a message of the key admitted while an earlier one retries.

// attempts is a handler that records each call (offset, in start order),
// fails the first call of the offsets in failOnce, sleeps each call for
// took(offset) when set, and counts a key running twice at once.
type attempts struct {
	mu       sync.Mutex
	calls    []int64
	inline   map[int64]bool // the offset's last call ran inline
	active   map[string]int
	overlap  []string
	failOnce map[int64]bool
	took     func(offset int64) time.Duration
}

func newAttempts(failOnce ...int64) *attempts {
	a := &attempts{inline: map[int64]bool{}, active: map[string]int{}, failOnce: map[int64]bool{}}
	for _, o := range failOnce {
		a.failOnce[o] = true
	}
	return a
}

var errFailOnce = errors.New("failed once, on purpose")

func (a *attempts) Handle(_ context.Context, m *handler.Message) error {
	key := string(m.Key)
	in := runsInline()
	a.mu.Lock()
	a.calls = append(a.calls, m.Offset)
	a.inline[m.Offset] = in
	if a.active[key]++; a.active[key] > 1 {
		a.overlap = append(a.overlap, fmt.Sprintf("%s at offset %d", key, m.Offset))
	}
	fail := a.failOnce[m.Offset]
	delete(a.failOnce, m.Offset)
	a.mu.Unlock()
	if a.took != nil {
		time.Sleep(a.took(m.Offset))
	}
	a.mu.Lock()
	a.active[key]--
	a.mu.Unlock()
	if fail {
		return errFailOnce
	}
	return nil
}

// sorted returns the offsets called so far, in offset order: what ran,
// whatever the pool's order among keys.
func (a *attempts) sorted() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(slices.Values(a.calls))
}

// checkKeyOrder fails unless each key's calls, of keys[offset], are want's
// (offsets in order, a retried one twice), and no key ran twice at once.
func (a *attempts) checkKeyOrder(t *testing.T, keys []string, want map[string][]int64) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.overlap) > 0 {
		t.Errorf("messages of one key ran at once: %v", a.overlap)
	}
	got := map[string][]int64{}
	for _, o := range a.calls {
		got[keys[o]] = append(got[keys[o]], o)
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("key %s ran %v, want %v", k, got[k], w)
		}
	}
}

// A message that fails in a lazy stretch keeps its key's later messages,
// in the same read and in later ones, waiting for its retry; other keys go
// on. Without the chaining on failure, offset 2's retry would run after 4.
func TestLazyFailureHoldsItsKeyForTheRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []string{"a", "b", "a", "c", "a", "b", "a", "d"}
		h := newAttempts(2)
		r := newRig(t, h, nil)
		c := r.claim("t", 0)
		c.claim.send(t, keys[:6]...) // one read, admitted lazy
		r.dispatch(c)
		synctest.Wait()
		if got := h.sorted(); !slices.Equal(got, []int64{0, 1, 2, 3, 5}) {
			t.Fatalf("before the retry want 0-3 and 5 run (4 waits for 2, b's 5 does not), got %v", got)
		}
		if !ranInline(h, 0) || !ranInline(h, 2) {
			t.Fatal("the read should have run inline (the lazy path)")
		}

		c.claim.send(t, keys[6:]...) // admitted while 2 waits for its retry
		synctest.Wait()
		if got := h.sorted(); !slices.Equal(got, []int64{0, 1, 2, 3, 5, 7}) {
			t.Fatalf("a read admitted while 2 retries: want its a (6) to wait and d (7) to run, got %v", got)
		}

		time.Sleep(time.Second) // past the retry's backoff
		synctest.Wait()
		h.checkKeyOrder(t, keys, map[string][]int64{"a": {0, 2, 2, 4, 6}, "b": {1, 5}, "c": {3}, "d": {7}})
		r.shutdown(t, c)
	})
}

// A lazy stretch past its budget hands its rest to the pool chained: of
// keys cycling through 3, the pool's 64 goroutines would otherwise run
// each key's messages at once, and out of order.
func TestLazyOverBudgetRestKeepsKeyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 48
		keys := keysCycling(n, 3)
		h := newAttempts()
		h.took = func(int64) time.Duration { return 100 * time.Microsecond } // 16 pass inlineBudget
		r := newRig(t, h, nil)
		c := r.claim("t", 0)
		c.claim.send(t, keys...)
		r.dispatch(c)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		inline := 0
		for o := range int64(n) {
			if h.inline[o] {
				inline++
			}
		}
		if inline != inlineLookEvery {
			t.Fatalf("%d ran inline, want the first %d (then the budget)", inline, inlineLookEvery)
		}
		want := map[string][]int64{}
		for o, k := range keys {
			want[k] = append(want[k], int64(o))
		}
		h.checkKeyOrder(t, keys, want)
		r.shutdown(t, c)
	})
}

// The watchdog chains the lazy message it finds running, and the rest of
// its stretch: a later message of the blocked key, in the same read, waits
// for it; the others run.
func TestLazyHandoffChainsTheRunningMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []string{"x", "a", "b", "a", "c", "x"}
		release := newLatch()
		h := newAttempts()
		h.took = func(o int64) time.Duration {
			if o == 1 {
				<-release.done()
			}
			return 0
		}
		r := newRig(t, h, nil)
		r.atCleanup(release.open)
		c := r.claim("t", 0)
		c.claim.send(t, keys...)
		r.dispatch(c)
		time.Sleep(2 * handoffAfter)
		synctest.Wait()
		if got := h.sorted(); !slices.Equal(got, []int64{0, 1, 2, 4, 5}) {
			t.Fatalf("after the handoff want all but 3 (a, behind the blocked 1) run, got %v", got)
		}
		release.open()
		synctest.Wait()
		h.checkKeyOrder(t, keys, map[string][]int64{"a": {1, 3}, "x": {0, 5}, "b": {2}, "c": {4}})
		r.shutdown(t, c)
	})
}

// The watchdog's chaining (releaseRest) of the message it finds running:
// one still running is chained, and its key's next waits for it; one done
// in its turn (the watchdog fired as it returned) is not, or its key's next
// would wait forever behind it. Driven directly: the window between a
// return and the next claim is too narrow to hit from a handler.
func TestLazyReleaseRestChainsOnlyARunningMessage(t *testing.T) {
	for _, done := range []bool{false, true} {
		b := setupPartition(t, 10, nil)
		b.p.inline = true
		b.admit("a")
		b.admit("a")
		q := slices.Clone(b.p.runQ)
		if len(q) != 2 || !q[0].lazy || !q[1].lazy || len(b.queued()) != 0 {
			t.Fatalf("two messages admitted to run inline with nothing unfinished should be lazy, in runQ")
		}
		if done { // completed, its completion held back (settle): its key still set
			b.p.mu.Lock()
			b.p.complete(q[0])
			b.p.mu.Unlock()
		}
		b.p.releaseRest(q[0], q[1:])
		got := b.queued()
		switch {
		case done && (len(got) != 1 || got[0] != q[1]):
			t.Fatalf("a@0 done: a@1 should go to the pool, got %d queued", len(got))
		case !done && len(got) != 0:
			t.Fatalf("a@0 running: a@1 should wait for it, got %d queued", len(got))
		case !done && b.finish(q[0]) != q[1]:
			t.Fatal("a@0 running: finishing it should hand a@1 on")
		}
	}
}
