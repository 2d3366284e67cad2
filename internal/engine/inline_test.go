package engine

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// runsInline reports whether the calling handler runs on a dispatching
// goroutine (an inline stretch or a direct run) rather than on a pool
// goroutine.
func runsInline() bool {
	buf := make([]byte, 16<<10)
	stack := string(buf[:runtime.Stack(buf, false)])
	return strings.Contains(stack, "(*inlineRun).stretch") || strings.Contains(stack, "(*inlineRun).runDirect")
}

// inlineLog records, per offset, whether its handler ran inline.
type inlineLog struct {
	mu     sync.Mutex
	inline map[int64]bool
}

func newInlineLog() *inlineLog { return &inlineLog{inline: map[int64]bool{}} }

func (l *inlineLog) note(m *handler.Message) {
	in := runsInline()
	l.mu.Lock()
	l.inline[m.Offset] = in
	l.mu.Unlock()
}

// split returns the offsets in [from, to) that ran inline and in the pool,
// and fails the test for one that did not run.
func (l *inlineLog) split(t *testing.T, from, to int64) (inline, pooled []int64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for o := from; o < to; o++ {
		in, ok := l.inline[o]
		switch {
		case !ok:
			t.Fatalf("offset %d did not run", o)
		case in:
			inline = append(inline, o)
		default:
			pooled = append(pooled, o)
		}
	}
	return inline, pooled
}

func keysCycling(n, keys int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("k%d", i%keys)
	}
	return ks
}

// A handler that returns at once runs on the dispatcher, every message, in
// every admission, once per offset, each key's in order.
func TestInlineFastHandlerRunsOnTheDispatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newInlineLog()
		rec := newRecorder(func(_ context.Context, m *handler.Message) { log.note(m) })
		r := newRig(t, rec, nil)
		c := r.claim("t", 0)
		c.claim.send(t, keysCycling(48, 5)...)
		r.dispatch(c)
		synctest.Wait()
		c.claim.send(t, keysCycling(48, 7)...) // a second admission
		synctest.Wait()

		if _, pooled := log.split(t, 0, 96); len(pooled) > 0 {
			t.Fatalf("a no-op handler ran in the pool for offsets %v; want every message inline", pooled)
		}
		rec.checkOncePerOffsetInKeyOrder(t, "t", 96)
		r.shutdown(t, c)
	})
}

// While it runs messages inline, a dispatcher admits at most inlineChunk of
// what it read before running them: a partition reuses those few tasks,
// still in the cache, instead of holding one for every message of its
// largest read (maxBatch). Order and once-per-offset hold across chunks.
func TestInlineAdmitsInChunks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3 * maxBatch
		rec := newRecorder(nil)
		r := newRig(t, rec, nil)
		c := r.claim("t", 0)
		c.claim.msgs = make(chan *sarama.ConsumerMessage, n)
		c.claim.send(t, keysCycling(n, 5)...) // each read takes maxBatch at once
		r.dispatch(c)
		synctest.Wait()
		rec.checkOncePerOffsetInKeyOrder(t, "t", n)
		c.p.mu.Lock()
		tasks := len(c.p.free) + len(c.p.spare) // all done: every task made is free or unused
		c.p.mu.Unlock()
		if tasks > inlineChunk {
			t.Fatalf("the partition made %d tasks for reads of %d messages run inline; want at most inlineChunk (%d)", tasks, maxBatch, inlineChunk)
		}
		r.shutdown(t, c)
	})
}

// A stretch slower than inlineMaxAvg a message stops at the first look at
// the clock past inlineBudget and hands its rest to the pool; the next
// messages then go to the pool for inlineCoolFirst, after which one stretch
// tries again, and a second slow one doubles the cool-down. A fast stretch
// ends it.
func TestInlineSlowStretchGoesToThePool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perMessage = 100 * time.Microsecond // 16 of them pass inlineBudget
		var slow atomic.Bool
		slow.Store(true)
		log := newInlineLog()
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			log.note(m)
			if slow.Load() {
				time.Sleep(perMessage)
			}
		})
		r := newRig(t, rec, nil)
		c := r.claim("t", 0)
		c.claim.send(t, keysCycling(40, 40)...) // offsets 0-39, one admission
		r.dispatch(c)
		time.Sleep(4 * time.Millisecond) // 16 inline (1.6ms), 24 in the pool at once
		checkSplit(t, log, 0, 40, inlineLookEvery, inlineLookEvery, "first slow stretch")

		c.claim.send(t, keysCycling(10, 10)...) // 40-49, within the cool-down (to 11.6ms)
		time.Sleep(time.Millisecond)
		checkSplit(t, log, 40, 50, 0, 0, "during the first cool-down")

		time.Sleep(inlineCoolFirst)             // 15ms
		c.claim.send(t, keysCycling(40, 40)...) // 50-89: tried again, slow again
		time.Sleep(4 * time.Millisecond)
		// The dispatcher may take the 40 in more than one admission: the
		// first is the stretch tried, and slow.
		checkSplit(t, log, 50, 90, 1, inlineLookEvery, "after the first cool-down")

		time.Sleep(inlineCoolFirst + inlineCoolFirst/2) // 34ms: within the doubled cool-down (to 36.6ms)
		c.claim.send(t, keysCycling(10, 10)...)         // 90-99
		time.Sleep(time.Millisecond)
		checkSplit(t, log, 90, 100, 0, 0, "1.5 cool-downs after a second slow stretch")

		slow.Store(false)
		time.Sleep(2 * inlineCoolFirst)
		for _, from := range []int64{100, 110} { // a fast stretch, then inline again
			c.claim.send(t, keysCycling(10, 10)...)
			synctest.Wait()
			checkSplit(t, log, from, from+10, 10, 10, "fast again after the cool-down")
		}
		rec.checkOncePerOffsetInKeyOrder(t, "t", 120)
		r.shutdown(t, c)
	})
}

// checkSplit fails unless offsets from..to-1 ran, the first n of them
// inline, least <= n <= most, and the rest in the pool.
func checkSplit(t *testing.T, log *inlineLog, from, to int64, least, most int, when string) {
	t.Helper()
	inline, pooled := log.split(t, from, to)
	n := len(inline)
	if n < least || n > most || n > 0 && inline[n-1] != from+int64(n)-1 {
		t.Fatalf("%s: offsets %v ran inline, %v in the pool; want the first %d to %d of %d-%d inline",
			when, inline, pooled, least, most, from, to-1)
	}
}

// A handler that blocks inline loses the dispatcher to the watchdog after
// handoffAfter: the stretch's other messages and later ones run, only its
// key waits; a revocation returns run while it still blocks, the partition
// counts it as running, and once it returns its key's next message runs,
// every message once, in key order.
func TestInlineBlockingHandlerIsHandedOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := newLatch()
		var blockedInline atomic.Bool
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			if m.Offset == 0 {
				blockedInline.Store(runsInline())
				<-release.done()
			}
		})
		r := newRig(t, rec, nil)
		r.atCleanup(release.open)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "b", "c")
		r.dispatch(c)
		synctest.Wait()
		if !blockedInline.Load() {
			t.Fatal("offset 0 should have started inline")
		}
		if got := offsetsOf(rec.snapshot()); len(got) != 1 {
			t.Fatalf("before handoffAfter only offset 0 may have started (b and c wait behind it in the stretch), got %v", got)
		}

		time.Sleep(handoffAfter)
		synctest.Wait()
		c.claim.send(t, "d", "a") // 3 runs, 4 waits for its key
		synctest.Wait()
		if got := offsetsOf(rec.snapshot()); len(got) != 4 || got[4] {
			t.Fatalf("after the handoff want offsets 0-3 started and 4 (key a) waiting, got %v", got)
		}
		if n := c.p.running(); n != 1 {
			t.Fatalf("the partition counts %d handlers running, want the blocked one", n)
		}

		c.revoke()
		synctest.Wait()
		if !c.returned() {
			t.Fatal("run did not return on revocation while a handler blocked inline")
		}
		release.open()
		synctest.Wait()
		rec.checkOncePerOffsetInKeyOrder(t, "t", 5)
		r.shutdown(t, c)
	})
}

// Inline runs hold one of the pool's seats: with a WORKER_CONCURRENCY
// below the partitions' count, handoffs, slow stretches, cool-downs and
// the pool never run more handlers at once than the setting; every message
// runs once, in key order; once everything is done every seat is back
// (none leaked, none given twice) and every handed-off goroutine has
// exited (one dispatching goroutine per partition, none after shutdown).
// The last case reads maxBatch at a time, admitted in chunks, with the
// handoffs and slow stretches in a read's second and last chunks.
func TestInlineRunsCountAgainstConcurrency(t *testing.T) {
	everyFew := func(m *handler.Message) time.Duration {
		switch m.Offset % 37 {
		case 5:
			return 3 * handoffAfter / 2 // handed off
		case 11:
			return 20 * time.Microsecond // a slow stretch: cool-down
		}
		return 0
	}
	inChunks := func(m *handler.Message) time.Duration {
		switch o := m.Offset % maxBatch; {
		case m.Partition == 0 && (o == 70 || o == 200):
			return 3 * handoffAfter / 2
		case m.Partition == 1 && o == 150:
			return 20 * time.Microsecond
		}
		return 0
	}
	for _, c := range []struct {
		name                    string
		concurrency, partitions int
		load                    mixedLoad
	}{
		{"concurrency=1/partitions=4", 1, 4, mixedLoad{rounds: 6, perRound: 60, pause: inlineCoolFirst, delay: everyFew, minInline: 1}},
		{"concurrency=2/partitions=3", 2, 3, mixedLoad{rounds: 6, perRound: 60, pause: inlineCoolFirst, delay: everyFew, minInline: 1}},
		{"concurrency=2/partitions=3/reads=maxBatch", 2, 3, mixedLoad{rounds: 4, perRound: maxBatch, pause: inlineCoolMax, delay: inChunks, minInline: 3 * inlineChunk}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { mixedLoadWithinConcurrency(t, c.concurrency, c.partitions, c.load) })
		})
	}
}

// mixedLoad is what mixedLoadWithinConcurrency sends each partition: rounds
// reads of perRound messages over 6 keys, pause apart; delay is how long a
// message's handler blocks; at least minInline messages must run inline.
type mixedLoad struct {
	rounds, perRound int
	pause            time.Duration
	delay            func(*handler.Message) time.Duration
	minInline        int
}

func mixedLoadWithinConcurrency(t *testing.T, concurrency, partitions int, load mixedLoad) {
	var active, most, inline atomic.Int32
	rec := newRecorder(func(_ context.Context, m *handler.Message) {
		n := active.Add(1)
		for old := most.Load(); n > old && !most.CompareAndSwap(old, n); old = most.Load() {
		}
		if runsInline() {
			inline.Add(1)
		}
		runtime.Gosched()
		if d := load.delay(m); d > 0 {
			time.Sleep(d)
		}
		active.Add(-1)
	})
	r := newRig(t, rec, func(c *testConfig) { c.Concurrency = concurrency })
	cs := make([]*claimed, partitions)
	for i := range cs {
		cs[i] = r.claim("t", int32(i))
		cs[i].claim.msgs = make(chan *sarama.ConsumerMessage, load.rounds*load.perRound) // never full
		r.dispatch(cs[i])
	}
	for range load.rounds {
		for _, c := range cs {
			c.claim.send(t, keysCycling(load.perRound, 6)...)
		}
		time.Sleep(load.pause) // let some partitions go inline again
	}
	want := len(cs) * load.rounds * load.perRound
	for i := 0; len(rec.snapshot()) < want && i < 10_000; i++ {
		time.Sleep(time.Millisecond) // the bubble's clock: the sleeping handlers run a few at a time
	}
	time.Sleep(inlineCoolMax) // past every cool-down; all idle
	synctest.Wait()
	if n := most.Load(); n > int32(concurrency) {
		t.Fatalf("%d handlers ran at once with WORKER_CONCURRENCY %d", n, concurrency)
	}
	if n := int(inline.Load()); n < load.minInline || n == want {
		t.Fatalf("%d of %d messages ran inline (want at least %d, not all); the test means both ways to run", n, want, load.minInline)
	}
	if n := r.pool.seats.Load(); n != int64(concurrency) {
		t.Errorf("all idle: %d seats free, want %d", n, concurrency)
	}
	for i, c := range cs {
		if n := inlineSlotCount(c.p); n != 1 {
			t.Errorf("partition %d: %d dispatching goroutines, want 1", i, n)
		}
	}
	checkEachPartitionOnceInKeyOrder(t, rec.snapshot(), len(cs), load.rounds*load.perRound)
	r.shutdown(t, cs...)
	for i, c := range cs {
		if n := inlineSlotCount(c.p); n != 0 {
			t.Errorf("partition %d: %d dispatching goroutines after shutdown, want 0", i, n)
		}
	}
}

// checkEachPartitionOnceInKeyOrder fails unless offsets 0..n-1 of each of
// partitions 0..parts-1 ran exactly once, each key's in increasing order.
func checkEachPartitionOnceInKeyOrder(t *testing.T, runs []handled, parts, n int) {
	t.Helper()
	type partKey struct {
		part int32
		key  string
	}
	seen := make([]map[int64]int, parts)
	for i := range seen {
		seen[i] = map[int64]int{}
	}
	last := map[partKey]int64{}
	for _, x := range runs {
		seen[x.part][x.offset]++
		k := partKey{x.part, x.key}
		if prev, ok := last[k]; ok && x.offset <= prev {
			t.Errorf("partition %d key %q: offset %d ran after %d", x.part, x.key, x.offset, prev)
		}
		last[k] = x.offset
	}
	for i, s := range seen {
		for o := range int64(n) {
			if s[o] != 1 {
				t.Errorf("partition %d offset %d handled %d times, want once", i, o, s[o])
			}
		}
		if len(s) != n {
			t.Errorf("partition %d: %d distinct offsets handled, want %d", i, len(s), n)
		}
	}
}

// Work queued in the pool with seats free does not keep other partitions
// from running inline: only a pool goroutine waiting for a seat does (see
// TestInlineDispatcherDoesNotStarveThePool). Partition a's backlog waits
// in the pool for its goroutines (woken one at a time here), while
// partition b's fast messages run on b's dispatcher. Refusing inline
// whenever anything is queued would send every partition to the pool for
// as long as any has a backlog.
func TestInlineNotRefusedForAQueuedBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newInlineLog()
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			switch {
			case m.Partition == 1:
				log.note(m)
			case m.Offset == 0:
				time.Sleep(3 * handoffAfter / 2) // handed off: a cools down
			default:
				time.Sleep(time.Millisecond)
			}
		})
		r := newRig(t, rec, func(c *testConfig) { c.Concurrency = 8 })
		r.pool.wakeAtOnce = 1
		a, b := r.claim("t", 0), r.claim("t", 1)
		r.dispatch(a)
		r.dispatch(b)
		a.claim.send(t, "x")
		time.Sleep(handoffAfter)
		synctest.Wait()
		a.claim.send(t, keysCycling(20, 20)...) // to the pool: a cools down
		synctest.Wait()
		if n := r.pool.waiting.Load(); n == 0 {
			t.Fatal("a's backlog should wait in the pool")
		}
		b.claim.send(t, keysCycling(10, 10)...)
		synctest.Wait()
		checkSplit(t, log, 0, 10, 10, 10, "b, while a's backlog is queued")
		for i := 0; len(rec.snapshot()) < 31 && i < 1000; i++ {
			time.Sleep(time.Millisecond)
		}
		var aRuns []handled
		for _, x := range rec.snapshot() {
			if x.part == 0 {
				aRuns = append(aRuns, x)
			}
		}
		checkEachPartitionOnceInKeyOrder(t, aRuns, 1, 21)
		r.shutdown(t, a, b)
	})
}
