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

	"github.com/kafkaworker/kafkaworker/handler"
)

// The randomized attack on direct runs (the review's; the mutations it
// names are listed in direct_attack_test.go).

// directChaos is TestDirectChaos's handler: it follows a plan per offset,
// and checks, as each call starts, that the call is its ordering group's
// turn within the claim that delivered it (gen): the group's first
// message delivered to that claim, the one before again after it failed,
// or the group's next one after the one before succeeded. It counts the
// handlers running per claim, and the successes returned before their
// claim's drain returned (ok) apart from those of handlers a drain
// abandoned (late).
type directChaos struct {
	mu      sync.Mutex
	plans   map[int64]plan
	order   Ordering
	keys    [][]byte
	gen     int
	calls   []dcall
	last    map[string]int     // gen/group: its last call, an index in calls
	sentTo  map[string][]int64 // gen/group: its offsets delivered to claim gen, in order
	ok      map[int64]int
	late    map[int64]int
	running map[int]int // per gen
	bad     []string
}

type dcall struct {
	off      int64
	done, ok bool
}

func (c *directChaos) group(o int64) (string, bool) {
	switch {
	case c.order == OrderByPartition:
		return "p", true
	case c.order == OrderNone || c.keys[o] == nil:
		return "", false
	}
	return "k" + string(c.keys[o]), true
}

// delivered records that o is sent to claim gen. Called before it is.
func (c *directChaos) delivered(o int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g, ok := c.group(o); ok {
		gk := fmt.Sprint(c.gen, "/", g)
		c.sentTo[gk] = append(c.sentTo[gk], o)
	}
}

func (c *directChaos) Handle(_ context.Context, m *handler.Message) error {
	o := m.Offset
	c.mu.Lock()
	gen := c.gen
	pl := c.plans[o]
	fail := pl.fails > 0
	if fail {
		pl.fails--
		c.plans[o] = pl
	}
	i := len(c.calls)
	c.calls = append(c.calls, dcall{off: o})
	if g, ordered := c.group(o); ordered {
		gk := fmt.Sprint(gen, "/", g)
		sent := c.sentTo[gk]
		j, had := c.last[gk]
		switch {
		case !had:
			if len(sent) == 0 || sent[0] != o {
				c.bad = append(c.bad, fmt.Sprintf("claim %d group %s: first call %d, want the first delivered (%v)", gen, g, o, sent[:min(len(sent), 3)]))
			}
		case c.calls[j].off == o:
			if !c.calls[j].done || c.calls[j].ok {
				c.bad = append(c.bad, fmt.Sprintf("claim %d group %s: %d ran again, its last call done %v ok %v", gen, g, o, c.calls[j].done, c.calls[j].ok))
			}
		default:
			prev := c.calls[j]
			if !prev.done || !prev.ok {
				c.bad = append(c.bad, fmt.Sprintf("claim %d group %s: %d started before %d succeeded (done %v ok %v)", gen, g, o, prev.off, prev.done, prev.ok))
			}
			if k := slices.Index(sent, prev.off); k+1 >= len(sent) || sent[k+1] != o {
				c.bad = append(c.bad, fmt.Sprintf("claim %d group %s: %d ran after %d, not its next delivered", gen, g, o, prev.off))
			}
		}
		c.last[gk] = i
	}
	c.running[gen]++
	c.mu.Unlock()
	time.Sleep(pl.took)
	c.mu.Lock()
	c.running[gen]--
	c.calls[i].done, c.calls[i].ok = true, !fail
	if !fail {
		if c.gen == gen {
			c.ok[o]++
		} else {
			c.late[o]++
		}
	}
	c.mu.Unlock()
	switch {
	case fail && pl.panics:
		panic("on purpose")
	case fail:
		return errors.New("failed on purpose")
	}
	return nil
}

// TestDirectChaos runs random mixes of what direct runs must survive, with
// mostly instant handlers so that reads run direct: failures (errors and
// panics, some twice), handlers taking handoffAfter (racing the watchdog),
// a little less or more, or a few microseconds (a slow run: a cool-down in
// the pool); nil keys; OrderByKey, OrderByPartition and OrderNone;
// WORKER_CONCURRENCY 1, 2 and 64; MaxInFlight 1, 2, 3, 10 and 1000; chunks
// of inlineChunk, 4 and 1, reads of up to 300 (several chunks, two takes);
// retries due at once or later; and up to two revocations mid-run, each
// drained with a wait that may cut handlers off, the partition claimed
// again with what the drained state does not count as done.
//
// It checks, as each call starts, that the call is its group's turn in its
// claim (order per key, partition); at quiet moments while sending, that the
// commit state counts as done only offsets that succeeded (nothing lost);
// at each drain, that drain counted exactly the handlers still running,
// and that the state counts as done exactly the offsets that succeeded,
// with what earlier claims counted (nothing lost, nothing handled twice
// after a clean stop); at the end that each offset succeeded exactly once
// outside abandoned handlers and nothing is in flight.
//
// All timers of the bubble run at whole microseconds; drain waits end at a
// fraction of one (500ns, then 250ns), so no handler returns at the instant
// a drain gives up: which handlers it abandons is exact.
//
// Catches (300 seeds) D1 and D3 (the engine crashes), D2, D4, D8, D10 (a
// stall: the test times out), and D7 in some runs (a crash, or a data race
// under -race); not D5, D6 or D9 (see above).
func TestDirectChaos(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { directChaosRun(t, seed) })
		})
	}
}

func directChaosRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	n := 20 + rng.IntN(500)
	nkeys := 1 + rng.IntN(6)
	order := []Ordering{OrderByKey, OrderByKey, OrderByKey, OrderByPartition, OrderNone}[rng.IntN(5)]
	keys := make([][]byte, n)
	plans := map[int64]plan{}
	slowEvery := []int{60, 300, 1000}[rng.IntN(3)] // slow handlers send the partition to the pool for a while
	failEvery := []int{12, 50, 400}[rng.IntN(3)]   // and failures the rest of their key
	for o := range n {
		if rng.IntN(10) > 0 {
			keys[o] = fmt.Appendf(nil, "k%d", rng.IntN(nkeys))
		}
		var pl plan
		if rng.IntN(failEvery) == 0 {
			pl.fails = 1 + rng.IntN(2)
			pl.panics = rng.IntN(2) == 0
		}
		switch x := rng.IntN(slowEvery); {
		case x < 2:
			pl.took = handoffAfter + time.Duration(rng.IntN(3)-1)*time.Microsecond
		case x == 2:
			pl.took = handoffAfter + time.Duration(rng.IntN(3))*time.Millisecond
		case x == 3:
			pl.took = time.Duration(3000+rng.IntN(7000)) * time.Microsecond
		case x < 6:
			pl.took = time.Duration(1+rng.IntN(60)) * time.Microsecond
		case x < 12:
			pl.took = time.Duration(rng.IntN(3)) * time.Microsecond
		}
		plans[int64(o)] = pl
	}
	h := &directChaos{plans: plans, order: order, keys: keys, last: map[string]int{}, sentTo: map[string][]int64{},
		ok: map[int64]int{}, late: map[int64]int{}, running: map[int]int{}}
	conc := []int{1, 2, 64}[rng.IntN(3)]
	maxIn := []int{1, 2, 3, 10, 1000, 1000}[rng.IntN(6)]
	r := newRig(t, h, func(cfg *testConfig) {
		cfg.Concurrency, cfg.MaxInFlight, cfg.Ordering = conc, maxIn, order
	})
	r.g.RetryBackoff = constantBackoff([]time.Duration{0, time.Microsecond, time.Millisecond, 30 * time.Millisecond}[rng.IntN(4)])
	r.g.chunk = []int{inlineChunk, inlineChunk, 4, 1}[rng.IntN(4)]
	defer func() {
		if t.Failed() {
			t.Logf("seed %d: n %d keys %d order %v conc %d maxIn %d chunk %d slowEvery %d failEvery %d", seed, n, nkeys, order, conc, maxIn, r.g.chunk, slowEvery, failEvery)
		}
	}()
	newClaim := func() *claimed {
		c := r.claim("t", 0)
		c.claim.msgs = make(chan *sarama.ConsumerMessage, n)
		r.dispatch(c)
		return c
	}
	send := func(c *claimed, o int64) {
		h.delivered(o)
		c.claim.msgs <- &sarama.ConsumerMessage{Topic: "t", Offset: o, Key: keys[o]}
	}
	quietCheck := func(c *claimed, sent int64, when string) {
		synctest.Wait()
		cov := coverage(t, c.p, sent)
		h.mu.Lock()
		defer h.mu.Unlock()
		for o := range sent {
			if cov[o] && h.ok[o] == 0 {
				t.Errorf("%s: offset %d counts as done but never succeeded", when, o)
			}
		}
	}
	counted := make([]bool, n) // done in the state of a claim drained before
	drainCheck := func(c *claimed, sent int64, wait time.Duration) {
		c.revoke()
		c.waitReturned(t, "the revocation")
		abandoned := c.p.drain(wait)
		cov := coverage(t, c.p, sent)
		h.mu.Lock()
		defer h.mu.Unlock()
		if running := h.running[h.gen]; abandoned != running {
			t.Errorf("claim %d: drain (wait %v) counted %d abandoned, %d handlers still run", h.gen, wait, abandoned, running)
		}
		for o := range sent {
			switch {
			case cov[o] && h.ok[o] == 0:
				t.Errorf("claim %d drained: offset %d counts as done but never succeeded", h.gen, o)
			case h.ok[o] > 0 && !cov[o] && !counted[o]:
				t.Errorf("claim %d drained: offset %d succeeded before the drain returned, not counted as done: handled twice", h.gen, o)
			}
			counted[o] = counted[o] || cov[o]
		}
		h.gen++
	}
	c := newClaim()
	revocations := rng.IntN(3)
	revokeAt := []int{n * (1 + rng.IntN(4)) / 5, n * (1 + rng.IntN(4)) / 5}
	slices.Sort(revokeAt)
	fraction := []time.Duration{500 * time.Nanosecond, 250 * time.Nanosecond}
	for sent := 0; sent < n; {
		b := min(n-sent, 1+rng.IntN(40))
		if rng.IntN(4) == 0 {
			b = min(n-sent, 1+rng.IntN(300))
		}
		for o := sent; o < sent+b; o++ {
			send(c, int64(o))
		}
		sent += b
		revoking := revocations > 0 && sent >= revokeAt[0]
		if gap := rng.IntN(5); gap > 0 && !(revoking && rng.IntN(2) == 0) {
			time.Sleep(time.Duration(rng.IntN(3000*gap*gap)) * time.Microsecond)
		}
		quietCheck(c, int64(sent), fmt.Sprintf("claim %d, %d sent", h.gen, sent))
		if revoking {
			wait := time.Minute
			if rng.IntN(3) > 0 {
				wait = time.Duration([]int{0, 1000, 2000, 2999, 5000}[rng.IntN(5)])*time.Microsecond + fraction[0]
			}
			fraction = fraction[1:]
			revocations, revokeAt = revocations-1, revokeAt[1:]
			drainCheck(c, int64(sent), wait)
			c = newClaim()
			c.claim.next.Store(int64(sent))
			for o := range int64(sent) {
				if !counted[o] {
					send(c, o)
				}
			}
		}
	}
	time.Sleep(5 * time.Second)
	quietCheck(c, int64(n), "all sent, 5s later")
	if got := inFlight(c.p); got != 0 {
		t.Errorf("%d messages still in flight: a stall", got)
	}
	drainCheck(c, int64(n), time.Minute)
	h.mu.Lock()
	for _, b := range h.bad[:min(len(h.bad), 10)] {
		t.Error(b)
	}
	for o := range int64(n) {
		if h.ok[o] != 1 {
			t.Errorf("offset %d succeeded %d times (and %d abandoned), want once", o, h.ok[o], h.late[o])
		}
	}
	h.mu.Unlock()
	r.shutdown(t, c)
}
