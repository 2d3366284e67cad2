package engine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// gates blocks each handler call until its offset's gate, or all of them,
// is opened.
type gates struct {
	one []*latch
	all *latch
}

func newGates(n int) *gates {
	g := &gates{one: make([]*latch, n), all: newLatch()}
	for i := range g.one {
		g.one[i] = newLatch()
	}
	return g
}

func (g *gates) block(_ context.Context, m *handler.Message) {
	select {
	case <-g.one[m.Offset].done():
	case <-g.all.done():
	}
}

func offsetsOf(runs []handled) map[int64]bool {
	s := map[int64]bool{}
	for _, r := range runs {
		s[r.offset] = true
	}
	return s
}

func inFlight(p *partition) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return uint64(p.state.Held())
}

// stallRig claims partition 3 of "t" with a budget of 2 and handlers that
// block on gates, sends a, b, a (the first two fill the budget, the third
// waits in the dispatcher), then b, a, c into the claim's channel. When it
// returns the dispatcher is holding: it has stopped reading the claim.
func stallRig(t *testing.T) (*rig, *claimed, *gates, *recorder, time.Time) {
	t.Helper()
	g := newGates(16)
	rec := newRecorder(g.block)
	r := newRig(t, rec, func(c *testConfig) { c.MaxInFlight, c.Concurrency = 2, 4 })
	r.atCleanup(g.all.open)
	c := r.claim("t", 3)
	c.claim.send(t, "a", "b", "a")
	r.dispatch(c)
	synctest.Wait()
	// Offset 0 started direct, unadmitted, and blocks; b and a wait behind
	// it until the watchdog admits it and hands the rest to a new
	// dispatching goroutine (direct.go), which admits b: the budget is
	// full from then on.
	time.Sleep(handoffAfter)
	synctest.Wait()
	holdingSince := time.Now()

	if got := offsetsOf(rec.snapshot()); len(got) != 2 || !got[0] || !got[1] {
		t.Fatalf("budget 2, keys a, b, a: want offsets 0 and 1 running, got %v", got)
	}
	if n := inFlight(c.p); n != 2 {
		t.Fatalf("in flight %d, want the budget, 2", n)
	}
	if n := len(c.claim.msgs); n != 0 {
		t.Fatalf("the first batch should have been taken whole; %d left in the claim", n)
	}
	c.claim.send(t, "b", "a", "c") // offsets 3, 4, 5
	synctest.Wait()
	if n := len(c.claim.msgs); n != 3 {
		t.Fatalf("budget used up: the dispatcher must stop reading, but the claim's channel holds %d of 3", n)
	}
	return r, c, g, rec, holdingSince
}

// A used-up budget first holds the claim back without pausing; only when it
// stays used up for stallAfter does the dispatcher pause exactly its
// partition and read on; it resumes once everything taken is admitted.
func TestDispatchStallPauseResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, c, g, rec, holdingSince := stallRig(t)
		tp := map[string][]int32{"t": {3}}

		// (a) Holding, just short of stallAfter: not paused, not reading.
		time.Sleep(stallAfter - time.Since(holdingSince) - time.Nanosecond)
		synctest.Wait()
		if calls := r.group.snapshot(); len(calls) != 0 {
			t.Fatalf("%v before stallAfter, want nothing yet", opsOf(calls))
		}
		if n := len(c.claim.msgs); n != 3 {
			t.Fatalf("still holding: the claim's channel should keep its 3 messages, holds %d", n)
		}

		// (b) At stallAfter: one pause of exactly this partition, then it
		// reads on (the claim's channel empties) without admitting more.
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		calls := r.group.snapshot()
		if len(calls) != 1 || calls[0].op != "pause" {
			t.Fatalf("at stallAfter want one pause, got %v", opsOf(calls))
		}
		if !sameTP(calls[0].tp, tp) {
			t.Fatalf("paused %v, want exactly %v", calls[0].tp, tp)
		}
		if d := calls[0].at.Sub(holdingSince); d != stallAfter {
			t.Fatalf("paused %v after the budget was used up, want stallAfter (%v)", d, stallAfter)
		}
		if n := len(c.claim.msgs); n != 0 {
			t.Fatalf("paused: the dispatcher must read on, but %d messages wait in the claim", n)
		}
		c.claim.send(t, "b") // offset 6, arriving while paused
		synctest.Wait()
		if n := len(c.claim.msgs); n != 0 {
			t.Fatalf("paused: a message arriving now must be read at once, %d wait", n)
		}
		if n := len(rec.snapshot()); n != 2 {
			t.Fatalf("reading on must not exceed the budget: %d handlers started, want 2", n)
		}

		// Still stuck much later: neither resumed nor paused again.
		time.Sleep(10 * stallAfter)
		synctest.Wait()
		if calls := r.group.snapshot(); len(calls) != 1 {
			t.Fatalf("stuck head: want the single pause, got %v", opsOf(calls))
		}

		// (c) Freeing one slot admits one message, but four are still
		// pending: no resume yet.
		g.one[0].open()
		synctest.Wait()
		if got := offsetsOf(rec.snapshot()); len(got) != 3 || !got[2] {
			t.Fatalf("a@0 done: a@2 should have been admitted and started, running %v", got)
		}
		if calls := r.group.snapshot(); len(calls) != 1 {
			t.Fatalf("messages still pending after one freed slot: want no resume yet, got %v", opsOf(calls))
		}

		// Release everything: the backlog drains and the partition resumes,
		// at once (handlers take no time here).
		released := time.Now()
		g.all.open()
		synctest.Wait()
		calls = r.group.snapshot()
		checkBalanced(t, calls, tp)
		if len(calls) != 2 {
			t.Fatalf("want exactly one pause and one resume, got %v", opsOf(calls))
		}
		if !calls[1].at.Equal(released) {
			t.Fatalf("resumed %v after the backlog was released, want at once", calls[1].at.Sub(released))
		}
		rec.checkOncePerOffsetInKeyOrder(t, "t", 7)
		if c.p.state.Snapshot().Marked != 7 {
			t.Fatalf("all 7 messages done: want offset 7 marked, got %d", c.p.state.Snapshot().Marked)
		}
		if c.returned() {
			t.Fatal("the dispatcher returned though its claim is still open")
		}
		r.shutdown(t, c)
	})
}

// Holding is timed per episode: a budget that frees within stallAfter never
// pauses, however long the holds add up to.
func TestDispatchShortHoldsNeverPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const took = stallAfter * 4 / 5
		rec := newRecorder(func(context.Context, *handler.Message) { time.Sleep(took) })
		r := newRig(t, rec, func(c *testConfig) { c.MaxInFlight, c.Concurrency = 2, 4 })
		c := r.claim("t", 0)
		start := time.Now()
		c.claim.send(t, "a", "b", "c", "d") // a, b run; c, d wait until took
		r.dispatch(c)
		// Midway through c and d, two more wait until 2*took: the holds
		// are [0, took) and [took+took/2, 2*took), more than stallAfter in all.
		time.Sleep(took + took/2)
		c.claim.send(t, "e", "f")
		synctest.Wait()
		if n := inFlight(c.p); n != 2 {
			t.Fatalf("in flight %d, want the budget, 2", n)
		}
		time.Sleep(3*took - time.Since(start))
		synctest.Wait()
		if calls := r.group.snapshot(); len(calls) != 0 {
			t.Fatalf("each hold was shorter than stallAfter, yet %v", opsOf(calls))
		}
		rec.checkOncePerOffsetInKeyOrder(t, "t", 6)
		r.shutdown(t, c)
	})
}

// Progress does not postpone the pause: the stall is timed from when the
// budget was first used up, not from the last completion, so a partition
// whose slow handlers keep its budget used up is paused, and a revocation
// noticed, stallAfter after it began holding. revokeTimeout counts on that.
func TestDispatchProgressDoesNotPostponeThePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget, took = 2, stallAfter * 2 / 5 // two rounds of completions within stallAfter
		rec := newRecorder(func(context.Context, *handler.Message) { time.Sleep(took) })
		r := newRig(t, rec, func(c *testConfig) { c.MaxInFlight, c.Concurrency = budget, 4 })
		c := r.claim("t", 0)
		// The budget is first used up at the handoff: a runs direct,
		// unadmitted, until the watchdog admits it and a new dispatching
		// goroutine admits b (direct.go).
		start := time.Now().Add(handoffAfter)
		c.claim.send(t, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j")
		r.dispatch(c)

		time.Sleep(stallAfter - took/4)
		c.revoke() // sarama closes Messages(): the dispatcher, not reading, cannot see it yet
		if n := len(rec.snapshot()); n <= budget {
			t.Fatalf("want completions refilling the budget while holding; %d started", n)
		}
		time.Sleep(time.Until(start.Add(stallAfter)) - time.Nanosecond)
		synctest.Wait()
		if c.returned() {
			t.Fatal("returned before stallAfter: it must not have been reading")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !c.returned() {
			t.Fatalf("still running %v after it began holding: progress postponed the pause", time.Since(start))
		}
		calls := r.group.snapshot()
		checkBalanced(t, calls, map[string][]int32{"t": {0}})
		if len(calls) != 2 || !calls[0].at.Equal(start.Add(stallAfter)) {
			t.Fatalf("want a pause at stallAfter and its resume, got %v", calls)
		}
		r.shutdown(t, c)
	})
}

// However the dispatcher ends, it ends promptly once it can see why, and it
// never leaves its partition paused.
func TestDispatchEndsWithoutLeavingAPause(t *testing.T) {
	for _, tc := range []struct {
		name   string
		paused bool // pause first (hold for stallAfter)
		end    func(*rig, *claimed)
		// noticed is how long after end the dispatcher returns.
		noticed func(holdingSince, ended time.Time) time.Duration
	}{
		{name: "claim closed while paused (cooperative revocation)", paused: true, end: closeClaim},
		{name: "session done while paused", paused: true, end: endSession},
		{name: "Run stopping while paused", paused: true, end: stopRun},
		{name: "session done while holding", end: endSession},
		{name: "Run stopping while holding", end: stopRun},
		{
			// Not reading, the dispatcher sees the close only once it
			// pauses at stallAfter; revokeTimeout allows for that.
			name: "claim closed while holding", end: closeClaim,
			noticed: func(holdingSince, ended time.Time) time.Duration {
				return holdingSince.Add(stallAfter).Sub(ended)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, c, g, _, holdingSince := stallRig(t)
				tp := map[string][]int32{"t": {3}}
				if tc.paused {
					time.Sleep(stallAfter)
					synctest.Wait()
					if calls := r.group.snapshot(); len(calls) != 1 || calls[0].op != "pause" {
						t.Fatalf("held for stallAfter: want one pause, got %v", opsOf(calls))
					}
				} else {
					time.Sleep(stallAfter / 2)
				}
				ended := time.Now()
				tc.end(r, c)
				var wait time.Duration
				if tc.noticed != nil {
					wait = tc.noticed(holdingSince, ended)
				}
				if wait > 0 {
					time.Sleep(wait - time.Nanosecond)
					synctest.Wait()
					if c.returned() {
						t.Fatalf("returned %v after the end, want %v", time.Since(ended), wait)
					}
					time.Sleep(time.Nanosecond)
				}
				synctest.Wait()
				if !c.returned() {
					t.Fatalf("still running %v after the end", time.Since(ended))
				}
				calls := r.group.snapshot()
				checkBalanced(t, calls, tp)
				if tc.paused && len(calls) != 2 {
					t.Fatalf("paused before the end: want pause, resume; got %v", opsOf(calls))
				}
				if !tc.paused && wait == 0 && len(calls) != 0 {
					t.Fatalf("never paused: want no pause or resume, got %v", opsOf(calls))
				}
				if n := len(calls); n > 0 && !calls[n-1].at.Equal(time.Now()) {
					t.Fatalf("resumed %v before the dispatcher returned, want on return", time.Since(calls[n-1].at))
				}
				g.all.open()
				synctest.Wait()
				r.shutdown(t, c)
			})
		})
	}
}

func closeClaim(_ *rig, c *claimed) { c.revoke() }
func endSession(_ *rig, c *claimed) { c.end() }
func stopRun(r *rig, _ *claimed)    { r.stopping.open() }
