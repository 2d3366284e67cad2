package engine

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Review tests of the chunked admission of inline runs (dispatcher.admitAndRun).

// pausedOverflow fills partition t/0's budget (MaxInFlight budget) with key
// h behind offset 0, which blocks inline on release (and is handed off),
// sends n more messages of keys cycling over 8, and waits past stallAfter:
// the dispatcher pauses and reads all n into its overflow. Handlers of the
// n sleep perMsg (inline: under inlineMaxAvg).
func pausedOverflow(t *testing.T, budget, n int, perMsg time.Duration) (*rig, *claimed, *latch, *recorder) {
	t.Helper()
	release := newLatch()
	rec := newRecorder(func(_ context.Context, m *handler.Message) {
		switch {
		case m.Offset == 0:
			<-release.done()
		case m.Offset >= int64(budget):
			time.Sleep(perMsg)
		}
	})
	r := newRig(t, rec, func(cfg *testConfig) { cfg.MaxInFlight = budget })
	r.atCleanup(release.open)
	c := r.claim("t", 0)
	c.claim.msgs = make(chan *sarama.ConsumerMessage, budget+n)
	hs := make([]string, budget)
	for i := range hs {
		hs[i] = "h"
	}
	c.claim.send(t, hs...)
	r.dispatch(c)
	time.Sleep(handoffAfter)
	synctest.Wait()
	if got := inFlight(c.p); got != uint64(budget) {
		t.Fatalf("in flight %d, want the budget %d", got, budget)
	}
	c.claim.send(t, keysCycling(n, 8)...)
	time.Sleep(stallAfter + time.Millisecond)
	synctest.Wait()
	if got := len(c.claim.msgs); got != 0 {
		t.Fatalf("paused: %d messages left in the claim, want all %d read into the overflow", got, n)
	}
	return r, c, release, rec
}

// (4) A paused partition's overflow (everything sarama had fetched) is
// admitted once the budget frees. Run inline, one chunk after another, it
// must not keep the dispatcher from its select for longer than an
// admission's inline runs were bounded to (inlineBudget): a stop, the
// session's end or a revocation that comes meanwhile ends the dispatching
// promptly. The chunks were each a stretch of their own, with a budget of
// their own, and the dispatcher looked at nothing between them: 8192
// messages of 4µs held it 32ms.
func TestChunkedOverflowDoesNotDelayTheEnd(t *testing.T) {
	for _, end := range []struct {
		name string
		do   func(*rig, *claimed)
	}{
		{"stop", func(r *rig, _ *claimed) { r.stopping.open() }},
		{"session end", func(_ *rig, c *claimed) { c.end() }},
		{"revocation", func(_ *rig, c *claimed) { c.revoke() }},
	} {
		t.Run(end.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const budget, n = 128, 8192
				r, c, release, rec := pausedOverflow(t, budget, n, 4*time.Microsecond)
				release.open() // the budget frees: the overflow is admitted, a chunk at a time
				time.Sleep(time.Millisecond)
				end.do(r, c)
				ended := time.Now()
				time.Sleep(5 * time.Millisecond)
				if !c.returned() {
					<-c.runDone
					t.Fatalf("the dispatching ended %v after the %s (%d handlers run): the overflow's chunks ran inline one after another without a look at it",
						time.Since(ended), end.name, len(rec.snapshot()))
				}
				r.shutdown(t, c)
			})
		})
	}
}

// blockers are handlers that block on a latch of their offset.
type blockers map[int64]*latch

func (b blockers) block(_ context.Context, m *handler.Message) {
	if l := b[m.Offset]; l != nil {
		<-l.done()
	}
}

func (b blockers) openAll() {
	for _, l := range b {
		l.open()
	}
}

// behind counts the offsets of keys that wait behind a blocked one: for
// keys cycling over nkeys, those after it with its key, below n.
func behind(blocked []int64, nkeys, n int64) int {
	waits := map[int64]bool{}
	for _, o := range blocked {
		for x := o + nkeys; x < n; x += nkeys {
			waits[x] = true
		}
	}
	return len(waits)
}

// (1), (2), (5) A handoff in any chunk of a read at the end of the topic
// (nothing more ever comes): the first, the middle ones, the last, a
// stretch's first message or the end of a key's chain in it; and two
// handoffs in a row (the second in another read, once the first's
// cool-down passed). While the handlers block, every other message runs,
// except those of their keys; once they return, every message ran once,
// in key order, and one dispatching goroutine is left. (The goroutine
// started by a handoff once waited for the claim's next message while the
// read's later chunks sat unadmitted: make bench's 256 partitions stalled.)
func TestChunkHandoffInAnyChunk(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reads [][]int64 // per read of maxBatch, the offsets that block
	}{
		{"first chunk, first message", [][]int64{{0}}},
		{"first chunk, end of a chain", [][]int64{{63}}},
		{"second chunk", [][]int64{{64}}},
		{"third chunk", [][]int64{{130}}},
		{"last chunk", [][]int64{{192}}},
		{"last message", [][]int64{{255}}},
		{"two reads, two handoffs", [][]int64{{10}, {maxBatch + 101}}},
		{"two reads, last then first chunk", [][]int64{{200}, {maxBatch + 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const nkeys = 4 // divides maxBatch: an offset's key is k(offset%4) in every read
				b := blockers{}
				var all []int64
				for _, os := range tc.reads {
					for _, o := range os {
						b[o] = newLatch()
						all = append(all, o)
					}
				}
				rec := newRecorder(b.block)
				r := newRig(t, rec, nil)
				r.atCleanup(b.openAll)
				c := r.claim("t", 0)
				c.claim.msgs = make(chan *sarama.ConsumerMessage, maxBatch)
				r.dispatch(c)
				for i := range tc.reads {
					c.claim.send(t, keysCycling(maxBatch, nkeys)...) // one read, four chunks
					time.Sleep(handoffAfter)
					synctest.Wait()
					if slots := inlineSlotCount(c.p); slots != i+2 {
						t.Fatalf("read %d: %d dispatching goroutines, want %d: the held ones and a successor", i, slots, i+2)
					}
					time.Sleep(inlineCoolMax) // past the cool-down: the next read runs inline
				}
				n := int64(len(tc.reads) * maxBatch)
				want := int(n) - behind(all, nkeys, n)
				if got := len(rec.snapshot()); got != want {
					t.Fatalf("with %v blocked, %d messages started, want %d: all but those of their keys", all, got, want)
				}
				b.openAll()
				synctest.Wait()
				rec.checkOncePerOffsetInKeyOrder(t, "t", n)
				if slots := inlineSlotCount(c.p); slots != 1 {
					t.Errorf("%d dispatching goroutines once the handlers returned, want 1", slots)
				}
				r.shutdown(t, c)
			})
		})
	}
}

// (5) The budget full around chunks, with a budget no multiple of the
// chunk: a read's first chunk blocks inline (handed off), its rest fills
// the budget (holding, the stall armed); once it frees, the next chunk
// leaves admitPending with more set while holding and the stall are still
// those of the first hold; that chunk blocks too (a second handoff), and
// the rest fills the budget again behind it, until the stall pauses the
// partition and the dispatcher reads on into the overflow. Every message
// runs once in key order, the pause is undone, nothing is left in flight.
func TestChunkBudgetFullAroundChunks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 100
		const x = budget + 1 // blocks in the second admission's first chunk
		b := blockers{0: newLatch(), x: newLatch()}
		rec := newRecorder(b.block)
		r := newRig(t, rec, func(cfg *testConfig) { cfg.MaxInFlight = budget })
		r.atCleanup(b.openAll)
		c := r.claim("t", 0)
		c.claim.msgs = make(chan *sarama.ConsumerMessage, 1024)
		keys := make([]string, 0, 1024)
		for range budget {
			keys = append(keys, "h") // behind 0: the budget
		}
		keys = append(keys, keysCycling(64, 2)...) // x is k1's first
		for len(keys) < 1024 {
			keys = append(keys, "k1") // behind x: the budget again
		}
		c.claim.send(t, keys...)
		r.dispatch(c)
		time.Sleep(handoffAfter)
		synctest.Wait()
		if n := inFlight(c.p); n != budget {
			t.Fatalf("in flight %d, want the budget %d", n, budget)
		}
		time.Sleep(2 * inlineCoolFirst) // past the cool-down: the next chunk runs inline
		b[0].open()
		time.Sleep(handoffAfter)
		synctest.Wait()
		if slots := inlineSlotCount(c.p); slots != 2 {
			t.Fatalf("%d dispatching goroutines, want 2: x's and its successor", slots)
		}
		if n := inFlight(c.p); n != budget {
			t.Fatalf("x blocks: in flight %d, want the budget %d again", n, budget)
		}
		time.Sleep(stallAfter)
		synctest.Wait()
		if calls := r.group.snapshot(); countOp(calls, "pause") != 1 || len(c.claim.msgs) != 0 {
			t.Fatalf("the budget full for stallAfter: calls %v, %d left in the claim; want a pause and the claim read into the overflow",
				opsOf(calls), len(c.claim.msgs))
		}
		b[x].open()
		synctest.Wait()
		rec.checkOncePerOffsetInKeyOrder(t, "t", int64(len(keys)))
		checkBalanced(t, r.group.snapshot(), map[string][]int32{"t": {0}})
		if n := inFlight(c.p); n != 0 {
			t.Errorf("all done: in flight %d", n)
		}
		r.shutdown(t, c)
	})
}

// (5) The done-set's room, not the budget, cuts chunks short and then
// stops intake while they run inline: key s's first message blocks
// (handed off), its later ones wait behind it while key f's, between
// them, finish inline, each adding a done range; as the done-set nears
// its limit, admit takes part of a chunk (admitPending's limit left over:
// more), then nothing. Intake stops for the done-set, the stall pauses
// the partition, and once s's first returns everything runs, once, in key
// order, the pause undone, nothing left in flight.
func TestChunkDoneSetFullMidChunk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 4096 // some 2000 alternate messages fill the done-set (doneset.MaxBytes)
		b := blockers{0: newLatch()}
		rec := newRecorder(b.block)
		r := newRig(t, rec, func(cfg *testConfig) { cfg.MaxInFlight = 4 * n })
		r.atCleanup(b.openAll)
		c := r.claim("t", 0)
		c.claim.msgs = make(chan *sarama.ConsumerMessage, n)
		c.claim.send(t, "s")
		r.dispatch(c)
		time.Sleep(handoffAfter + 2*inlineCoolFirst) // handed off, and past the cool-down
		keys := make([]string, n-1)
		for i := range keys {
			keys[i] = "f"
			if i%2 == 1 {
				keys[i] = "s" // the even offsets
			}
		}
		c.claim.send(t, keys...)
		synctest.Wait()
		if by := c.d.blockedBy; by != "done_set" || len(c.claim.msgs) == 0 {
			t.Fatalf("intake stopped for %q with %d left in the claim; want it stopped for the done-set", by, len(c.claim.msgs))
		}
		time.Sleep(stallAfter)
		synctest.Wait()
		b.openAll()
		synctest.Wait()
		rec.checkOncePerOffsetInKeyOrder(t, "t", n)
		checkBalanced(t, r.group.snapshot(), map[string][]int32{"t": {0}})
		if calls := r.group.snapshot(); len(calls) != 2 {
			t.Errorf("calls %v: want a pause at stallAfter, and its resume", opsOf(calls))
		}
		if n := inFlight(c.p); n != 0 {
			t.Errorf("all done: in flight %d", n)
		}
		r.shutdown(t, c)
	})
}

// (5) seat() refuses mid-read: with WORKER_CONCURRENCY 1, while a's first
// chunk runs inline, b's message is queued in the pool, whose goroutine
// waits for the seat. The chunk's end gives it the seat: b runs before a's
// next chunk, which goes to the pool with the read's rest, in key order.
func TestChunkSeatRefusedMidRead(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the woken pool goroutine runs only when the dispatcher blocks
	synctest.Test(t, func(t *testing.T) {
		var (
			r           *rig
			a, b        *claimed
			bAfter      atomic.Int64 // a's messages run when b's started
			aRan, bRuns atomic.Int64
		)
		log := newInlineLog()
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			if m.Partition == 1 {
				bAfter.Store(aRan.Load())
				bRuns.Add(1)
				return
			}
			log.note(m)
			aRan.Add(1)
			if m.Offset == 10 {
				b.claim.send(t, "b")
				time.Sleep(time.Microsecond) // b's dispatcher queues it; the pool's goroutine waits for the seat
				if n := r.pool.seatWaiters.Load(); n != 1 {
					t.Errorf("%d pool goroutines wait for a seat, want 1", n)
				}
			}
		})
		r = newRig(t, rec, func(c *testConfig) { c.Concurrency = 1 })
		a, b = r.claim("t", 0), r.claim("t", 1)
		a.claim.msgs = make(chan *sarama.ConsumerMessage, maxBatch)
		r.dispatch(b)
		a.claim.send(t, keysCycling(maxBatch, 4)...)
		r.dispatch(a)
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := bAfter.Load(); got != inlineChunk {
			t.Errorf("b's message started after %d of a's, want after a's first chunk (%d)", got, inlineChunk)
		}
		if inline, _ := log.split(t, 0, maxBatch); len(inline) != inlineChunk || inline[len(inline)-1] != inlineChunk-1 {
			t.Errorf("a's offsets %v ran inline, want its first chunk, the rest in the pool", inline)
		}
		var aRuns []handled
		for _, x := range rec.snapshot() {
			if x.part == 0 {
				aRuns = append(aRuns, x)
			}
		}
		checkEachPartitionOnceInKeyOrder(t, aRuns, 1, maxBatch)
		if n := bRuns.Load(); n != 1 {
			t.Errorf("b's message ran %d times, want once", n)
		}
		r.shutdown(t, a, b)
	})
}
