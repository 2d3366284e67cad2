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

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Review attacks on direct runs (direct.go). The mutations named in the
// tests' comments, each applied alone to the code and then reverted:
//
//	D1  handoffDirect does not admit the running message (admitDirect skipped)
//	D2  admitDirect does not chain the message in its key's FIFO (p.chain skipped)
//	D3  runDirect's failure case does not admit the failed message (admitDirect skipped)
//	D4  State.AdmitDone is a no-op
//	D5  the run's end (inlineRun.runDirect) does not flushDirect
//	D6  flushFinished does not flushDirect
//	D7  handoffDirect admits the running message even when it settled (directSettled check dropped)
//	D8  partition.runDirect does not publish its run slot (drain cannot see a direct handler)
//	D9  runDirect's not-running branch does not admit the claimed message (leaveUnfinished skipped)
//	D10 directAllowed runs a read direct while something is unfinished
//	D11 runDirect's failed-while-draining case does not admit the message (leaveUnfinished skipped)
//
// D6 and D9 survive every test here. In the order ConsumeClaim follows no
// one flushes while a direct run has done messages pending (the run's end,
// admitDirect and handoffDirect flush them first); D6 is caught by
// direct_test.go's tests, which flush from outside the run. D9's window (a
// message claimed, then the partition found not running) is too narrow to
// force. D5 only delays the admission (the next flush or any later
// admission covers it) and is caught by the one test that looks before any
// other flush.

// coverage reports which of the offsets [0, n) the commit state counts as
// done now, flushing nothing: those below the committable offset, and
// those admitted above it and not unfinished (the done ranges the final
// commit's done-set carries). Read it at a quiet moment (after
// synctest.Wait). It fails the test if the unfinished list is longer than
// the state's held count (a cycle, which DoneRanges would walk for ever).
func coverage(t *testing.T, p *partition, n int64) []bool {
	t.Helper()
	snap := p.state.Snapshot()
	unfinished := map[int64]bool{}
	steps := 0
	p.state.EachUnfinished(func(x *task) bool {
		unfinished[x.Offset()] = true
		steps++
		return steps <= snap.Held
	})
	if steps > snap.Held {
		t.Fatalf("the commit state's unfinished list is longer than its held count %d: corrupt", snap.Held)
	}
	cov := make([]bool, n)
	for o := range n {
		cov[o] = o < snap.Resume || o <= snap.LastAdmitted && !unfinished[o]
	}
	return cov
}

// script is a handler whose behaviour is set per offset: fail a number of
// calls (panicking when panics), sleep, block on a latch. It records each
// call in start order, whether it ran on a dispatching goroutine, and the
// successes.
type script struct {
	mu     sync.Mutex
	calls  []int64
	inline map[int64]bool
	ok     map[int64]int
	fails  map[int64]int
	panics map[int64]bool
	took   map[int64]time.Duration
	block  map[int64]*latch
}

func newScript() *script {
	return &script{inline: map[int64]bool{}, ok: map[int64]int{}, fails: map[int64]int{},
		panics: map[int64]bool{}, took: map[int64]time.Duration{}, block: map[int64]*latch{}}
}

var errScripted = errors.New("scripted failure")

func (s *script) Handle(_ context.Context, m *handler.Message) error {
	o, in := m.Offset, runsInline()
	s.mu.Lock()
	s.calls = append(s.calls, o)
	s.inline[o] = in
	fail := s.fails[o] > 0
	if fail {
		s.fails[o]--
	}
	took, block, panics := s.took[o], s.block[o], s.panics[o]
	s.mu.Unlock()
	time.Sleep(took)
	if block != nil {
		<-block.done()
	}
	if fail && panics {
		panic("scripted panic")
	}
	if fail {
		return errScripted
	}
	s.mu.Lock()
	s.ok[o]++
	s.mu.Unlock()
	return nil
}

// ran returns the offsets called so far, sorted (a retried one twice).
func (s *script) ran() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.calls))
}

// of returns the calls of the offsets in group, in start order.
func (s *script) of(group ...int64) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, o := range s.calls {
		if slices.Contains(group, o) {
			out = append(out, o)
		}
	}
	return out
}

func (s *script) ranInline(o int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inline[o]
}

// checkDoneOnce fails unless each offset below n succeeded exactly once.
func (s *script) checkDoneOnce(t *testing.T, n int64) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for o := range n {
		if s.ok[o] != 1 {
			t.Errorf("offset %d succeeded %d times, want once", o, s.ok[o])
		}
	}
}

// checkCoveredDone fails when the commit state counts as done an offset
// below n whose handler has not succeeded: lost on a crash.
func (s *script) checkCoveredDone(t *testing.T, p *partition, n int64, when string) {
	t.Helper()
	cov := coverage(t, p, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	for o := range n {
		if cov[o] && s.ok[o] == 0 {
			t.Errorf("%s: offset %d counts as done in the commit state but never succeeded", when, o)
		}
	}
}

// A read run direct from end to end is admitted, done, at the run's end:
// the committable offset covers it without any flush by the test, the tick
// or a drain, and nothing is held. 150 messages: three chunks, three runs.
// Catches D4 and D5 (the committable offset stays at 0).
func TestDirectRunAdmitsItsDoneMessagesAtItsEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 150
		s := newScript()
		r := newRig(t, s, nil)
		c := r.claim("t", 0)
		c.claim.msgs = make(chan *sarama.ConsumerMessage, n)
		c.claim.send(t, keysCycling(n, 7)...)
		r.dispatch(c)
		synctest.Wait()
		for o := range int64(n) {
			if !s.ranInline(o) {
				t.Fatalf("offset %d did not run on the dispatcher: not a direct run", o)
			}
		}
		if got := c.p.state.Snapshot(); got.Marked != n || got.Held != 0 {
			t.Fatalf("after the runs, unflushed: committable %d held %d, want %d and 0", got.Marked, got.Held, n)
		}
		c.p.mu.Lock()
		unfinished, pending := c.p.unfinished, c.p.directDone
		c.p.mu.Unlock()
		if unfinished != 0 || pending != 0 {
			t.Fatalf("unfinished %d, direct done not admitted %d; want 0 and 0", unfinished, pending)
		}
		s.checkDoneOnce(t, n)
		r.shutdown(t, c)
	})
}

// A direct message that fails (an error, or a panic) is admitted and
// chained in its key's FIFO before the rest of the read is admitted: its
// key's later messages (offsets 3 and 5, key b) wait for its retry, other
// keys and nil keys go on, and the committable offset stays at it until
// the retry succeeds. With OrderByPartition everything after it waits; with
// OrderNone nothing does. Catches D2 (3 runs before 1's retry, ByKey and
// ByPartition), D3 (the committable offset passes 1 before its retry) and
// D10.
func TestDirectFailureIsAdmittedAndChainedFirst(t *testing.T) {
	keys := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("b"), nil, []byte("b"), []byte("d")}
	const n = int64(7)
	for _, tc := range []struct {
		name    string
		order   Ordering
		panics  bool
		before  []int64 // run before 1's retry
		laterOf []int64 // 1's retry group: its calls must be 1, 1, then these
	}{
		{"ByKey", OrderByKey, false, []int64{0, 1, 2, 4, 6}, []int64{3, 5}},
		{"ByKeyPanic", OrderByKey, true, []int64{0, 1, 2, 4, 6}, []int64{3, 5}},
		{"ByPartition", OrderByPartition, false, []int64{0, 1}, []int64{2, 3, 4, 5, 6}},
		{"None", OrderNone, true, []int64{0, 1, 2, 3, 4, 5, 6}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newScript()
				s.fails[1], s.panics[1] = 1, tc.panics
				r := newRig(t, s, func(cfg *testConfig) { cfg.Ordering = tc.order })
				r.g.RetryBackoff = constantBackoff(30 * time.Millisecond)
				c := r.claim("t", 0)
				sendKeys(c, keys...)
				r.dispatch(c)
				synctest.Wait()
				if !s.ranInline(0) || !s.ranInline(1) {
					t.Fatal("0 and 1 should have run direct, on the dispatcher")
				}
				if got := s.ran(); !slices.Equal(got, tc.before) {
					t.Fatalf("before 1's retry ran %v, want %v", got, tc.before)
				}
				s.checkCoveredDone(t, c.p, n, "before the retry")
				if m := marked(c.p); m != 1 {
					t.Fatalf("before 1's retry: committable %d, want 1", m)
				}
				time.Sleep(time.Second)
				synctest.Wait()
				group := append([]int64{1}, tc.laterOf...)
				if want := append([]int64{1, 1}, tc.laterOf...); !slices.Equal(s.of(group...), want) {
					t.Errorf("ran %v, want %v (the later ones wait for 1's retry)", s.of(group...), want)
				}
				s.checkDoneOnce(t, n)
				if m := marked(c.p); m != n {
					t.Errorf("all done: committable %d, want %d", m, n)
				}
				if got := inFlight(c.p); got != 0 {
					t.Errorf("%d still in flight", got)
				}
				r.shutdown(t, c)
			})
		})
	}
}

// The watchdog takes a direct run whose message blocks: at the first
// message of the read (offset 0), and at the first message of its second
// chunk (offset 64, a read of 100 run a chunk of inlineChunk at a time).
// The blocked message is admitted and chained: the committable offset stays
// at it while the rest runs, and its key's later messages wait for it.
// Catches D1 (the committable offset passes the blocked message), D2 (its
// key's next message runs while it blocks) and D4.
func TestDirectHandoffAtAChunksFirstMessage(t *testing.T) {
	for _, blocked := range []int64{0, 64} {
		t.Run(fmt.Sprint(blocked), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n, nkeys = 100, 5
				s := newScript()
				release := newLatch()
				s.block[blocked] = release
				r := newRig(t, s, nil)
				r.atCleanup(release.open)
				c := r.claim("t", 0)
				c.claim.msgs = make(chan *sarama.ConsumerMessage, n)
				c.claim.send(t, keysCycling(n, nkeys)...)
				r.dispatch(c)
				synctest.Wait()
				if !s.ranInline(blocked) {
					t.Fatalf("offset %d should have started direct", blocked)
				}
				if m := marked(c.p); m != blocked {
					t.Fatalf("before the handoff: committable %d, want %d", m, blocked)
				}
				time.Sleep(handoffAfter + time.Second)
				synctest.Wait()
				for o := range int64(n) {
					sameKey := o > blocked && (o-blocked)%nkeys == 0
					if got := len(s.of(o)); got != 0 && sameKey {
						t.Fatalf("offset %d of the blocked message's key ran while %d blocks", o, blocked)
					} else if got != 1 && !sameKey {
						t.Fatalf("offset %d ran %d times while %d blocks, want once", o, got, blocked)
					}
				}
				s.checkCoveredDone(t, c.p, n, "while blocked")
				if m := marked(c.p); m != blocked {
					t.Fatalf("after the handoff: committable %d, want %d (it still runs)", m, blocked)
				}
				release.open()
				synctest.Wait()
				s.checkDoneOnce(t, n)
				if m := marked(c.p); m != n {
					t.Fatalf("all done: committable %d, want %d", m, n)
				}
				r.shutdown(t, c)
			})
		})
	}
}

// A direct message the watchdog took, which then fails: it was admitted
// and chained at the handoff, so its failure retries it in place, its
// key's later message (3) waits for the retry, and the committable offset
// stays at it throughout. Catches D1 (the committable offset passes 1
// while it runs) and D2 (3 runs before 1's retry).
func TestDirectHandoffThenTheMessageFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newScript()
		s.took[1], s.fails[1] = 3*handoffAfter, 1
		r := newRig(t, s, nil)
		r.g.RetryBackoff = constantBackoff(30 * time.Millisecond)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "b", "c", "b", "d")
		r.dispatch(c)
		time.Sleep(2 * handoffAfter) // handed off, 1 still runs
		synctest.Wait()
		if !s.ranInline(1) {
			t.Fatal("1 should have started direct")
		}
		s.checkCoveredDone(t, c.p, 5, "while 1 runs")
		if m := marked(c.p); m != 1 {
			t.Fatalf("while 1 runs, handed off: committable %d, want 1", m)
		}
		time.Sleep(2 * handoffAfter) // 1 failed, its retry not due
		synctest.Wait()
		s.checkCoveredDone(t, c.p, 5, "after 1 failed")
		if got := s.of(1, 3); !slices.Equal(got, []int64{1}) {
			t.Fatalf("after 1 failed: key b ran %v, want [1] (3 waits for the retry)", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := s.of(1, 3); !slices.Equal(got, []int64{1, 1, 3}) {
			t.Errorf("key b ran %v, want [1 1 3]", got)
		}
		s.checkDoneOnce(t, 5)
		if m := marked(c.p); m != 5 {
			t.Errorf("all done: committable %d, want 5", m)
		}
		r.shutdown(t, c)
	})
}

// The watchdog fires at the very instant a direct message taking exactly
// handoffAfter returns: either settles it first. Each read (one second
// apart, past any cool-down) has such a message mid-run, and fast ones
// before and after it, of a few keys. Whichever wins, each message is done
// once, its key in order, and the committable offset never passes a
// message not done. Run with -race -count=20: the interleaving varies.
// Catches D4, and D7 in most runs under -race (the watchdog fires after
// the handler settled and before the next claim: the settled scratch is
// admitted again, stays in flight for ever, and is refilled while the
// state holds it: a data race), in a few of 20 without.
func TestDirectWatchdogRacesTheMessagesReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const reads, per = 12, 6
		s := newScript()
		for i := range int64(reads) {
			s.took[i*per+2] = handoffAfter
		}
		r := newRig(t, s, nil)
		c := r.claim("t", 0)
		keys := keysCycling(reads*per, 4)
		r.dispatch(c)
		for i := range reads {
			c.claim.send(t, keys[i*per:(i+1)*per]...)
			synctest.Wait()
			s.checkCoveredDone(t, c.p, reads*per, fmt.Sprintf("read %d, before the watchdog", i))
			time.Sleep(handoffAfter)
			synctest.Wait()
			s.checkCoveredDone(t, c.p, reads*per, fmt.Sprintf("read %d, at the watchdog", i))
			time.Sleep(1100 * time.Millisecond)
			synctest.Wait()
			if got := inFlight(c.p); got != 0 {
				t.Fatalf("read %d: %d still in flight a second later", i, got)
			}
		}
		s.checkDoneOnce(t, reads*per)
		for k := range 4 {
			var group []int64
			for o := k; o < reads*per; o += 4 {
				group = append(group, int64(o))
			}
			if got := s.of(group...); !slices.Equal(got, group) {
				t.Errorf("key k%d ran %v, want %v", k, got, group)
			}
		}
		if m := marked(c.p); m != reads*per {
			t.Errorf("all done: committable %d, want %d", m, reads*per)
		}
		r.shutdown(t, c)
	})
}

// A claim revoked while a direct message, handed off, still runs: the
// dispatching ends, and the drain waits for the message. When it succeeds
// within the wait, drain counts nothing abandoned and the committable
// offset covers it (not handled twice); when it does not, drain counts it,
// the offset stays at it, and its late success changes nothing. Catches
// D1 (the offset passed it while it ran), D2 (5, of its key, ran while it
// blocked: the committable offset is 6, not 5, after the drain) and D8
// (drain does not wait: the success is discarded, or the abandoned count
// is 0).
func TestDirectDrainWaitsForAHandedOffMessage(t *testing.T) {
	for _, returns := range []bool{true, false} {
		t.Run(fmt.Sprintf("returnsInTime=%v", returns), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newScript()
				release := newLatch()
				s.block[2] = release
				r := newRig(t, s, nil)
				r.atCleanup(release.open)
				c := r.claim("t", 0)
				c.claim.send(t, "a", "b", "c", "d", "e", "c")
				r.dispatch(c)
				time.Sleep(handoffAfter)
				synctest.Wait()
				if !s.ranInline(2) {
					t.Fatal("2 should have started direct")
				}
				if m := marked(c.p); m != 2 {
					t.Fatalf("handed off, 2 running: committable %d, want 2", m)
				}
				c.revoke()
				c.waitReturned(t, "the revocation")
				abandoned := make(chan int)
				go func() { abandoned <- c.p.drain(time.Second) }()
				synctest.Wait() // drain waits for 2
				if returns {
					release.open()
				}
				n := <-abandoned
				want, wantMarked := 0, int64(5) // 5 (key c) never started: drain stops intake
				if !returns {
					want, wantMarked = 1, 2
				}
				if n != want {
					t.Errorf("drain counted %d handlers abandoned, want %d", n, want)
				}
				if m := c.p.state.Snapshot().Marked; m != wantMarked {
					t.Errorf("after drain: committable %d, want %d", m, wantMarked)
				}
				release.open()
				synctest.Wait()
				if m := c.p.state.Snapshot().Marked; m != wantMarked {
					t.Errorf("after the late return: committable %d, want %d (discarded)", m, wantMarked)
				}
				s.checkCoveredDone(t, c.p, 6, "after drain")
				r.shutdown(t, c)
			})
		})
	}
}

// Not the order ConsumeClaim follows (it drains once the dispatching
// ended), but the order the code provides for ("drain may be counting
// already"): a drain starts while a direct message (1) runs on the
// dispatching goroutine, before the watchdog. Drain waits for it (its run
// slot); the messages after it never start.
//   - It succeeds within the wait: the committable offset covers it and the
//     message before it. Catches D8 (drain does not wait: the success is
//     discarded, committable 1).
//   - It fails (found by this review; catches D11): it must be admitted
//     unfinished (leaveUnfinished). Left out, the dispatcher would admit
//     the read's rest (2 and 3) and the commit state would count the gap at
//     1 as done: the committable offset would pass 1, which never
//     succeeded. The same holds for a message claimed by a run that then
//     finds the partition not running (runDirect's first branch, D9; the
//     window is too narrow to force here).
func TestDirectDrainStartedDuringADirectMessage(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fails      int
		wantMarked int64
	}{
		{name: "it succeeds", wantMarked: 2},
		{name: "it fails", fails: 1, wantMarked: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newScript()
				release := newLatch()
				s.block[1], s.fails[1] = release, tc.fails
				r := newRig(t, s, nil)
				r.atCleanup(release.open)
				c := r.claim("t", 0)
				c.claim.send(t, "a", "b", "c", "d")
				r.dispatch(c)
				synctest.Wait()
				if !s.ranInline(1) {
					t.Fatal("1 should have started direct")
				}
				abandoned := make(chan int)
				go func() { abandoned <- c.p.drain(time.Second) }()
				synctest.Wait() // draining, waiting for 1; time stands still: no watchdog
				release.open()
				if n := <-abandoned; n != 0 {
					t.Errorf("drain counted %d abandoned, want 0 (1 returned within the wait)", n)
				}
				if m := c.p.state.Snapshot().Marked; m != tc.wantMarked {
					t.Errorf("after drain: committable %d, want %d", m, tc.wantMarked)
				}
				if got := s.ran(); !slices.Equal(got, []int64{0, 1}) {
					t.Errorf("ran %v, want [0 1]: nothing starts once draining", got)
				}
				s.checkCoveredDone(t, c.p, 4, "after the drain")
				r.shutdown(t, c)
			})
		})
	}
}

// With a budget of 1, 2 or 3 a direct run still runs a read; its failed
// message takes one place of the budget, and what follows is admitted as
// the budget allows, behind it for its key. Every message is done once,
// in key order, and the committable offset never passes the failed one
// before its retry. Catches D2, D3, D4 and D10.
func TestDirectFailureWithASmallBudget(t *testing.T) {
	for _, budget := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(budget), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 40
				s := newScript()
				s.fails[5], s.fails[17] = 2, 1
				r := newRig(t, s, func(cfg *testConfig) { cfg.MaxInFlight = budget })
				r.g.RetryBackoff = constantBackoff(20 * time.Millisecond)
				c := r.claim("t", 0)
				keys := keysCycling(n, 4)
				c.claim.send(t, keys...)
				r.dispatch(c)
				synctest.Wait()
				if !s.ranInline(5) {
					t.Fatal("5 should have run direct")
				}
				s.checkCoveredDone(t, c.p, n, "before the retries")
				if m := marked(c.p); m != 5 {
					t.Fatalf("5 failed: committable %d, want 5", m)
				}
				if got := s.of(9); len(got) != 0 {
					t.Fatalf("9 (key of 5) ran before 5's retry")
				}
				for range 10 {
					time.Sleep(20 * time.Millisecond)
					synctest.Wait()
					s.checkCoveredDone(t, c.p, n, "during the retries")
				}
				time.Sleep(time.Second)
				synctest.Wait()
				s.checkDoneOnce(t, n)
				if got := s.of(1, 5, 9, 13, 17, 21, 25, 29, 33, 37); !slices.Equal(got, []int64{1, 5, 5, 5, 9, 13, 17, 17, 21, 25, 29, 33, 37}) {
					t.Errorf("key k1 ran %v", got)
				}
				if m := marked(c.p); m != n {
					t.Errorf("all done: committable %d, want %d", m, n)
				}
				r.shutdown(t, c)
			})
		})
	}
}
