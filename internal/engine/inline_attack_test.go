package engine

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Review tests of the inline runs (inline.go): the watchdog against the
// stretch, the seats, the stop, the paths that must stay in the pool.

// inlineSlotCount is how many dispatching goroutines of p exist: the one
// dispatching and those that lost the dispatching to a handoff and still
// run a handler.
func inlineSlotCount(p *partition) int {
	if s := p.inlineSlots.Load(); s != nil {
		return len(*s)
	}
	return 0
}

// A watchdog armed for one stretch must not hand off a later one. The
// stretch here is fast on average (600 messages, 2ms: 3.3µs a message) but
// lasts exactly handoffAfter: its watchdog fires as its last handler
// returns. When the stretch's end wins the race (end's Or before the
// watchdog's), the watchdog's goroutine has already been started (Stop
// returns false) and runs later: by then the dispatcher started the next
// stretch (message z, sent by the last handler), whose pos it finds not
// over, so it hands off a stretch that has held the dispatcher for no
// time at all, starts a second dispatching goroutine and sends the
// partition to the pool for a cool-down.
//
// The big stretch needs one admission of more than 400 ready messages (a
// stretch of 2ms is judged slow below that, and then the next messages go
// to the pool): the dispatcher pauses on a full budget and reads into its
// overflow, which one admission takes in once the budget frees.
//
// Which of the two goroutines runs first at the 2ms instant varies, so
// the scenario runs on up to 12 partitions in turn; an attempt in which
// the watchdog won (a due handoff: z then runs in the pool) checks
// nothing.
func TestInlineLateWatchdogSparesTheNextStretch(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the stretch's goroutine runs on to its next stretch before the watchdog's
	synctest.Test(t, func(t *testing.T) {
		const attempts = 12
		checked := 0
		for id := range int32(attempts) {
			if lateWatchdogAttempt(t, id) {
				checked++
			}
			if t.Failed() {
				return
			}
		}
		if checked == 0 {
			t.Fatalf("the watchdog won in all %d attempts: the scenario never arose, nothing was checked", attempts)
		}
	})
}

// lateWatchdogAttempt runs TestInlineLateWatchdogSparesTheNextStretch's
// scenario on a rig of its own and reports whether it checked anything.
func lateWatchdogAttempt(t *testing.T, id int32) bool {
	const (
		budget = 700
		bigLen = 600
		y      = int64(budget) // 700: admitted alone, blocks inline while the budget frees
		last   = y + bigLen    // 1300: the big stretch's last, takes handoffAfter
		z      = last + 1      // 1301: the next stretch
		w      = z + 1         // 1302: after it
	)
	l0, l1, ly, lz := newLatch(), newLatch(), newLatch(), newLatch()
	var (
		c      *claimed
		mu     sync.Mutex
		inline = map[int64]bool{}
		zSlots int
	)
	note := func(m *handler.Message) {
		in := runsInline()
		mu.Lock()
		inline[m.Offset] = in
		mu.Unlock()
	}
	rec := newRecorder(func(_ context.Context, m *handler.Message) {
		switch m.Offset {
		case 0:
			<-l0.done()
		case 1:
			<-l1.done()
		case y:
			note(m)
			<-ly.done()
		case last:
			time.Sleep(handoffAfter)
			c.claim.msgs <- c.claim.message("z") // the next stretch's message, ready as this one ends
		case z:
			note(m)
			<-lz.done()
			mu.Lock()
			zSlots = inlineSlotCount(c.p)
			mu.Unlock()
		case w:
			note(m)
		}
	})
	r := newRig(t, rec, func(cfg *testConfig) { cfg.MaxInFlight = budget })
	r.g.chunk = budget // the big stretch is one admission: a stretch of inlineChunk lasting 2ms is slow
	r.atCleanup(l0.open, l1.open, ly.open, lz.open)
	c = r.claim("t", id)
	c.claim.msgs = make(chan *sarama.ConsumerMessage, 4096)

	// Offsets 0 (key h) and 1 (key g) block; 0 inline, 1 handed to the
	// pool with it at handoffAfter. 2-699 (key h) wait behind 0: the
	// budget is used up.
	c.claim.send(t, "h", "g")
	r.dispatch(c)
	synctest.Wait()
	keys := make([]string, budget-2)
	for i := range keys {
		keys[i] = "h"
	}
	c.claim.send(t, keys...)
	time.Sleep(handoffAfter)
	synctest.Wait()
	if n := inFlight(c.p); n != budget {
		t.Fatalf("in flight %d, want the budget %d", n, budget)
	}

	// 700-1300, distinct keys: held back, then read into the overflow
	// once the dispatcher pauses at stallAfter.
	c.claim.send(t, keysCycling(bigLen+1, bigLen+1)...)
	time.Sleep(stallAfter + time.Millisecond)
	synctest.Wait()
	if n := len(c.claim.msgs); n != 0 {
		t.Fatalf("paused: %d messages left in the claim", n)
	}

	// One slot frees: y is admitted alone and runs inline, blocking.
	l1.open()
	synctest.Wait()
	mu.Lock()
	yInline := inline[y]
	mu.Unlock()
	if !yInline {
		t.Fatalf("offset %d should run inline", y)
	}
	// While it blocks (no time passes), 0 and its key's 698 complete.
	l0.open()
	synctest.Wait()
	// y returns: the next admission takes the 600 in at once, a stretch
	// that ends, with its watchdog, handoffAfter later.
	ly.open()
	time.Sleep(handoffAfter + time.Microsecond)
	synctest.Wait()

	mu.Lock()
	zInline, zSeen := inline[z]
	mu.Unlock()
	if !zSeen {
		t.Fatalf("offset %d did not start", z)
	}
	lz.open()
	synctest.Wait()
	if zInline {
		mu.Lock()
		n := zSlots
		mu.Unlock()
		if n != 1 {
			t.Errorf("partition %d: while z ran inline, in a stretch that had held the dispatcher for 0s, %d dispatching goroutines existed: "+
				"the big stretch's watchdog, fired as that stretch ended, handed off the next one", id, n)
		}
		c.claim.send(t, "w")
		synctest.Wait()
		mu.Lock()
		wInline := inline[w]
		mu.Unlock()
		if !wInline {
			t.Errorf("partition %d: offset %d ran in the pool: the partition is in a cool-down though every stretch it ran since the pause was fast", id, w)
		}
	}
	n := z + 1
	if zInline {
		n = w + 1
	}
	rec.checkOncePerOffsetInKeyOrder(t, "t", n)
	r.shutdown(t, c)
	return zInline
}

// A dispatcher that runs inline gives its seat back after each stretch and
// takes it again before its next one: with WORKER_CONCURRENCY 1 and a
// partition whose claim always has a message ready (a backlog, a fast
// handler), a task waiting in the pool needs its woken goroutine to take
// the seat in the few instructions between the two. Here it never does:
// the other partition's message, sent to the pool by its cool-down, waits
// while the busy partition runs thousands of messages inline. In the pool
// alone it would have run within the busy partition's next message.
func TestInlineDispatcherDoesNotStarveThePool(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // a busy machine: the woken pool goroutine runs only when the dispatcher blocks
	synctest.Test(t, func(t *testing.T) {
		var (
			a       *claimed
			stop    atomic.Bool
			aRuns   atomic.Int64
			b1Start atomic.Int64 // a's runs when b's second message started; -1 before
		)
		b1Start.Store(-1)
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			switch {
			case m.Partition == 0: // a: 4µs a message (inline: under inlineMaxAvg), and a backlog that never ends
				time.Sleep(4 * time.Microsecond)
				aRuns.Add(1)
				if !stop.Load() {
					a.claim.msgs <- a.claim.message("a")
				}
			case m.Offset == 0: // b's first: slow, its partition cools down
				time.Sleep(100 * time.Microsecond)
			default:
				b1Start.Store(aRuns.Load())
			}
		})
		r := newRig(t, rec, func(c *testConfig) { c.Concurrency = 1 })
		b := r.claim("t", 1)
		b.claim.send(t, "b")
		r.dispatch(b)
		time.Sleep(time.Millisecond)
		synctest.Wait()

		a = r.claim("t", 0)
		a.claim.send(t, keysCycling(8, 8)...)
		r.dispatch(a)
		time.Sleep(100 * time.Microsecond)
		b.claim.send(t, "b") // b's cool-down (10ms): to the pool
		time.Sleep(5 * time.Millisecond)
		stop.Store(true)
		started := b1Start.Load()
		ran := aRuns.Load()
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if started < 0 {
			t.Errorf("b's message waited in the pool 5ms while a ran %d messages inline (concurrency 1): the pool's goroutine never got the seat", ran)
		} else {
			t.Logf("b's message started after %d of a's %d", started, ran)
		}
		r.shutdown(t, a, b)
	})
}

// inlineBatchLog is a batch handler that records whether any lot ran on a
// dispatching goroutine.
type inlineBatchLog struct {
	mu       sync.Mutex
	lots     int
	msgs     int
	onInline int
}

func (l *inlineBatchLog) HandleBatch(_ context.Context, msgs []*handler.Message) error {
	in := runsInline()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lots++
	l.msgs += len(msgs)
	if in {
		l.onInline++
	}
	return nil
}

// A batch handler's lots always run in the pool: the dispatcher never
// runs a lot inline, and never keeps a seat for it.
func TestInlineNeverForBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &inlineBatchLog{}
		r := newBatchRig(t, l, 8, time.Millisecond)
		c := r.claim("t", 0)
		r.dispatch(c)
		for range 4 {
			c.claim.send(t, keysCycling(40, 6)...)
			time.Sleep(10 * time.Millisecond)
		}
		synctest.Wait()
		l.mu.Lock()
		lots, msgs, onInline := l.lots, l.msgs, l.onInline
		l.mu.Unlock()
		if msgs != 160 || onInline != 0 {
			t.Errorf("%d lots, %d messages, %d lots inline; want 160 messages, none inline", lots, msgs, onInline)
		}
		if n := r.pool.seats.Load(); n != int64(len(r.pool.slots)) {
			t.Errorf("idle: %d seats free of %d", n, len(r.pool.slots))
		}
		r.shutdown(t, c)
	})
}

// The watchdog fires exactly as a handler returns, over and over: the
// stretch's claim of its next message races the watchdog's taking of the
// rest. Whichever wins, every message runs once, each key's in order, and
// a revocation afterwards returns with nothing left running.
func TestInlineHandoffRacesTheClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			if m.Offset%10 == 0 {
				time.Sleep(handoffAfter) // returns as the watchdog fires
			}
		})
		r := newRig(t, rec, nil)
		const parts, rounds = 8, 5
		cs := make([]*claimed, parts)
		for i := range cs {
			cs[i] = r.claim("t", int32(i))
			r.dispatch(cs[i])
		}
		for range rounds {
			for _, c := range cs {
				c.claim.send(t, keysCycling(10, 4)...)
			}
			time.Sleep(inlineCoolMax) // a fresh stretch each round
		}
		synctest.Wait()
		checkEachPartitionOnceInKeyOrder(t, rec.snapshot(), parts, rounds*10)
		for _, c := range cs {
			c.revoke()
		}
		synctest.Wait()
		for i, c := range cs {
			if !c.returned() {
				t.Errorf("partition %d: run did not return on revocation", i)
			}
			if n := c.p.running(); n != 0 {
				t.Errorf("partition %d: %d handlers counted running", i, n)
			}
		}
		r.shutdown(t, cs...)
	})
}
