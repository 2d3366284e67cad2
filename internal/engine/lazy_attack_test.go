package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Review attacks on lazy keys (lazy.go), beyond lazy_test.go's. The
// mutations the tests catch: M1 handoff passes no running message to
// releaseRest; M2 run does not chain a failed lazy message; M3 lazyBroke
// does not end the stretch; M4 lazyBroke not reset per stretch; M5
// admitsLazy without its lazyQ guard; M6 releaseRest ignores chain's
// waits; M8 chainLazy leaves t.lazy set; M9 lazy with anything
// unfinished; M10 releaseRest chains the rest before the running one; M13
// end pushes the rest unchained.

// plan is what a chaos handler does with one offset: fail its first fails
// calls (the first by panicking when panics), each call taking took.
type plan struct {
	fails  int
	panics bool
	took   time.Duration
}

// chaos is a handler that follows a plan per offset, records every call in
// start order, and counts overlaps within an ordering group: the key (nil
// keys are in none), or the whole partition for OrderByPartition.
type chaos struct {
	mu      sync.Mutex
	plans   map[int64]plan
	byPart  bool
	calls   []int64
	ok      map[int64]int
	active  map[string]int
	overlap []string
}

func newChaos(plans map[int64]plan, byPart bool) *chaos {
	return &chaos{plans: plans, byPart: byPart, ok: map[int64]int{}, active: map[string]int{}}
}

func (c *chaos) group(m *handler.Message) (string, bool) {
	switch {
	case c.byPart:
		return "", true
	case m.Key == nil:
		return "", false
	}
	return string(m.Key), true
}

func (c *chaos) Handle(_ context.Context, m *handler.Message) error {
	g, ordered := c.group(m)
	c.mu.Lock()
	c.calls = append(c.calls, m.Offset)
	pl := c.plans[m.Offset]
	fail := pl.fails > 0
	if fail {
		pl.fails--
		c.plans[m.Offset] = pl
	}
	if ordered {
		if c.active[g]++; c.active[g] > 1 {
			c.overlap = append(c.overlap, fmt.Sprintf("%q at offset %d", g, m.Offset))
		}
	}
	c.mu.Unlock()
	time.Sleep(pl.took)
	c.mu.Lock()
	if ordered {
		c.active[g]--
	}
	if !fail {
		c.ok[m.Offset]++
	}
	c.mu.Unlock()
	if fail && pl.panics {
		panic("on purpose")
	}
	if fail {
		return errors.New("failed on purpose")
	}
	return nil
}

// check fails unless each offset below n succeeded once, no group ran two
// at once, and each group's calls are its offsets in order, each failing
// one repeated (its retries) before the group's next: fails are the plans'
// fails as sent, keys the messages' keys (nil: in no group).
func (c *chaos) check(t *testing.T, keys [][]byte, fails map[int64]int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.overlap) > 0 {
		t.Errorf("ran at once: %v", c.overlap)
	}
	for o := range int64(len(keys)) {
		if c.ok[o] != 1 {
			t.Errorf("offset %d succeeded %d times, want once", o, c.ok[o])
		}
	}
	want, got := map[string][]int64{}, map[string][]int64{}
	groupOf := func(o int64) (string, bool) {
		if c.byPart {
			return "", true
		}
		return string(keys[o]), keys[o] != nil
	}
	for o := range int64(len(keys)) {
		if g, ok := groupOf(o); ok {
			for range fails[o] + 1 {
				want[g] = append(want[g], o)
			}
		}
	}
	for _, o := range c.calls {
		if g, ok := groupOf(o); ok {
			got[g] = append(got[g], o)
		}
	}
	for g, w := range want {
		if !slices.Equal(got[g], w) {
			t.Errorf("group %q ran %v, want %v", g, got[g], w)
		}
	}
}

// ranInline reports whether offset o's last call ran inline, under a's
// lock: handlers may still write it.
func ranInline(a *attempts, o int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inline[o]
}

// constantBackoff retries after d, for ever.
func constantBackoff(d time.Duration) func() backoff.BackOff {
	return func() backoff.BackOff { return backoff.NewConstantBackOff(d) }
}

// sendKeys puts messages with keys (nil allowed) into the claim.
func sendKeys(c *claimed, keys ...[]byte) {
	for _, k := range keys {
		m := c.claim.message("")
		m.Key = k
		c.claim.msgs <- m
	}
}

// TestLazyChaos runs random mixes of what lazy keys must survive: failures
// (some by panicking, some twice), handlers slow enough for the budget or
// the watchdog (some exactly handoffAfter, racing it), nil keys,
// OrderByPartition, WORKER_CONCURRENCY 1 and 2, a small MaxInFlight,
// chunks of 1 and 4, retries due at once or later, reads arriving while
// stretches and retries run, and half the time a revocation mid-run and
// the partition claimed again. Each group must run in order, a failed
// message again before its next, each message succeed once, nothing stay
// in flight, and a revoked partition's state hold exactly what did not
// succeed. Catches (each run of 200 seeds) M1, M2, M3, M6, M8, M9,
// M10 and M13 of the report (a wrong order, a message run twice, or a
// corrupted free list).
func TestLazyChaos(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { chaosRun(t, seed) })
		})
	}
}

func chaosRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := 20 + rng.IntN(300)
	nkeys := 1 + rng.IntN(6)
	byPart := rng.IntN(5) == 0
	keys := make([][]byte, n)
	plans, fails := map[int64]plan{}, map[int64]int{}
	for o := range n {
		if rng.IntN(10) > 0 {
			keys[o] = fmt.Appendf(nil, "k%d", rng.IntN(nkeys))
		}
		var pl plan
		if rng.IntN(8) == 0 {
			pl.fails = 1 + rng.IntN(2)
			pl.panics = rng.IntN(2) == 0
		}
		switch x := rng.IntN(40); {
		case x < 2:
			pl.took = handoffAfter + time.Duration(rng.IntN(3)-1)*time.Microsecond
		case x == 2:
			pl.took = handoffAfter + time.Duration(rng.IntN(3))*time.Millisecond
		case x < 6:
			pl.took = time.Duration(rng.IntN(60)) * time.Microsecond
		case x < 20:
			pl.took = time.Duration(rng.IntN(3)) * time.Microsecond
		}
		plans[int64(o)], fails[int64(o)] = pl, pl.fails
	}
	h := newChaos(plans, byPart)
	conc := []int{1, 2, 64}[rng.IntN(3)]
	maxIn := []int{3, 10, 1000}[rng.IntN(3)]
	r := newRig(t, h, func(cfg *testConfig) {
		cfg.Concurrency, cfg.MaxInFlight = conc, maxIn
		if byPart {
			cfg.Ordering = OrderByPartition
		}
	})
	r.g.RetryBackoff = constantBackoff([]time.Duration{0, time.Microsecond, time.Millisecond, 30 * time.Millisecond}[rng.IntN(4)])
	r.g.chunk = []int{inlineChunk, 4, 1}[rng.IntN(3)]
	newClaim := func() *claimed {
		c := r.claim("t", 0)
		c.claim.msgs = make(chan *sarama.ConsumerMessage, n)
		r.dispatch(c)
		return c
	}
	c := newClaim()
	revokeAt := n * (1 + rng.IntN(8)) / 4 // within the sending half the time
	for sent := 0; sent < n; {
		b := min(n-sent, 1+rng.IntN(40))
		sendKeys(c, keys[sent:sent+b]...)
		sent += b
		if gap := rng.IntN(4); gap > 0 {
			time.Sleep(time.Duration(rng.IntN(3000*gap)) * time.Microsecond)
		}
		if sent >= revokeAt && revokeAt < n {
			revokeAt = n
			c = revokeAndClaimAgain(t, r, c, h, newClaim, keys[:sent])
		}
	}
	time.Sleep(5 * time.Second)
	synctest.Wait()
	h.check(t, keys, fails)
	if got := inFlight(c.p); got != 0 {
		t.Errorf("%d messages still in flight: a stall", got)
	}
	if t.Failed() {
		t.Logf("seed %d: n %d keys %d byPart %v conc %d maxIn %d chunk %d", seed, n, nkeys, byPart, conc, maxIn, r.g.chunk)
	}
	c.revoke()
	c.waitReturned(t, "the revocation")
	r.shutdown(t, c)
}

// The watchdog takes a stretch whose lazy message, blocked past
// handoffAfter, then fails: the watchdog chained it (releaseRest), so its
// failure must not chain it again (a message chained behind itself runs
// again on its completion, or never), and its key's later message, in the
// same read, waits for its retry. Catches chainLazy not clearing t.lazy
// (M8) and the handoff not chaining the running message (M1).
func TestLazyHandoffThenTheRunningMessageFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []string{"x", "a", "b", "a", "c"}
		h := newAttempts(1)
		h.took = func(o int64) time.Duration {
			if o == 1 {
				return 2 * handoffAfter // the watchdog takes the stretch first
			}
			return 0
		}
		r := newRig(t, h, nil)
		c := r.claim("t", 0)
		c.claim.send(t, keys...)
		r.dispatch(c)
		synctest.Wait()
		if !ranInline(h, 0) {
			t.Fatal("the read should have run inline (the lazy path)")
		}
		time.Sleep(time.Second) // the handoff, the failure, its retry
		synctest.Wait()
		h.checkKeyOrder(t, keys, map[string][]int64{"x": {0}, "a": {1, 1, 3}, "b": {2}, "c": {4}})
		if n := inFlight(c.p); n != 0 {
			t.Errorf("%d messages still in flight", n)
		}
		r.shutdown(t, c)
	})
}

// An admission is lazy only while everything unfinished is lazy and
// waits in runQ. Here a read's first admit call is not lazy (x, in the
// pool, is unfinished): z waits in runQ with its key's FIFO. x completes
// before the read's second admit call (a done-set cut splits a read so):
// what is unfinished is then exactly runQ, but not lazy, so the second z
// must still be chained behind the first, or, should the first fail in
// the stretch (a non-lazy failure does not end it), the second would run
// before its retry. Catches admitsLazy without its lazyQ guard (M5).
func TestLazyNotAfterANonLazyAdmitOfTheSameRead(t *testing.T) {
	b := setupPartition(t, 10, nil)
	b.admit("x") // not inline: to the pool
	x := b.queued()
	b.p.inline = true
	b.admit("z")
	if len(x) != 1 || len(b.p.runQ) != 1 || b.p.runQ[0].lazy {
		t.Fatalf("z, admitted while x is unfinished, should wait in runQ not lazy")
	}
	b.finish(x[0])
	b.admit("z")
	if got := len(b.p.runQ); got != 1 || b.p.runQ[0].next == nil {
		t.Fatalf("the second z: runQ holds %d, want it chained behind the first (not lazy, not in runQ)", got)
	}
}

// A stretch ended by a lazy failure ends only itself: the next stretch of
// the same dispatching goroutine runs all its messages inline again.
// Catches runSlot.lazyBroke not being reset per stretch (M4): every later
// stretch would end after its first message and send the rest to the pool.
func TestLazyFailureEndsOnlyItsStretch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := keysCycling(40, 40)
		h := newAttempts(1)
		r := newRig(t, h, nil)
		c := r.claim("t", 0)
		c.claim.send(t, keys[:3]...)
		r.dispatch(c)
		time.Sleep(time.Second) // 1 fails, ends its stretch, and is retried
		synctest.Wait()
		c.claim.send(t, keys[3:]...)
		synctest.Wait()
		for o := int64(3); o < 40; o++ {
			if !ranInline(h, o) {
				t.Fatalf("offset %d ran in the pool: the stretch after a failed one should run inline", o)
			}
		}
		want := map[string][]int64{}
		for o, k := range keys {
			want[k] = []int64{int64(o)}
		}
		want[keys[1]] = []int64{1, 1}
		h.checkKeyOrder(t, keys, want)
		r.shutdown(t, c)
	})
}

// revokeAndClaimAgain revokes c mid-run, checks that its dispatching ends
// and that its commit state holds exactly the offsets whose handler did not
// succeed (a success it lost would be handled twice; one it marked without
// a success, lost), then claims the partition again and redelivers, as
// the next owner would, from the resume offset those sent not done.
func revokeAndClaimAgain(t *testing.T, r *rig, c *claimed, h *chaos, newClaim func() *claimed, sent [][]byte) *claimed {
	t.Helper()
	c.revoke()
	c.waitReturned(t, "the revocation")
	// A pool goroutine may publish its run slot for a task of c still
	// queued, and back out on seeing the drain: drain must not count it.
	if n := c.p.drain(time.Minute); n != 0 {
		t.Fatalf("drain counted %d handlers abandoned; none can be running (every handler returns within seconds)", n)
	}
	synctest.Wait()
	if n := c.p.running(); n != 0 {
		t.Fatalf("%d handlers still running after the drain", n)
	}
	snap := c.p.state.Snapshot()
	h.mu.Lock()
	notDone := 0
	for o := snap.Resume; o <= snap.LastAdmitted; o++ {
		if h.ok[o] == 0 {
			notDone++
		}
	}
	for o := range snap.Resume {
		if h.ok[o] == 0 {
			t.Errorf("offset %d below the resume offset %d never succeeded", o, snap.Resume)
		}
	}
	h.mu.Unlock()
	if notDone != snap.Held {
		t.Errorf("revoked: %d admitted offsets not succeeded, the state holds %d", notDone, snap.Held)
	}
	c2 := newClaim()
	h.mu.Lock()
	defer h.mu.Unlock()
	for o := snap.Resume; o < int64(len(sent)); o++ {
		if h.ok[o] == 0 {
			c2.claim.msgs <- &sarama.ConsumerMessage{Topic: "t", Offset: o, Key: sent[o]}
		}
	}
	c2.claim.next.Store(int64(len(sent)))
	return c2
}
