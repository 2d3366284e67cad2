package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// marked is the partition's committable offset once everything held back
// is told to the commit state, as the dispatcher's tick does.
func marked(p *partition) int64 {
	p.flushHeld()
	return p.state.Snapshot().Marked
}

// A direct message the watchdog takes while its handler runs is admitted
// before anything after it: the committable offset stays at it while the
// later messages complete in the pool, and a later message of its key
// waits for it. Without the admission the offset would pass a message not
// done: lost on a crash.
func TestDirectHandoffHoldsTheCommittableOffset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := newLatch()
		var direct atomic.Bool
		rec := newRecorder(func(_ context.Context, m *handler.Message) {
			if m.Offset == 2 {
				direct.Store(runsInline())
				<-release.done()
			}
		})
		r := newRig(t, rec, nil)
		r.atCleanup(release.open)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "b", "c", "d", "e", "c") // 2 blocks; 5 is its key's next
		r.dispatch(c)
		synctest.Wait()
		if !direct.Load() {
			t.Fatal("offset 2 should have started on the dispatcher (a direct run)")
		}
		if m := marked(c.p); m != 2 {
			t.Fatalf("before the handoff: committable %d, want 2 (0 and 1 done, 2 running)", m)
		}

		time.Sleep(handoffAfter)
		synctest.Wait()
		got := offsetsOf(rec.snapshot())
		if !got[3] || !got[4] || got[5] {
			t.Fatalf("after the handoff want 3 and 4 run and 5 (key c) waiting for 2, got %v", got)
		}
		if m := marked(c.p); m != 2 {
			t.Fatalf("after the handoff, 3 and 4 done: committable %d, want 2 (2 still running)", m)
		}

		release.open()
		synctest.Wait()
		if m := marked(c.p); m != 6 {
			t.Fatalf("everything done: committable %d, want 6", m)
		}
		rec.checkOncePerOffsetInKeyOrder(t, "t", 6)
		r.shutdown(t, c)
	})
}

// The direct messages done and not yet admitted are admitted by
// flushFinished, which drain calls before the final commit: a drain that
// finds no handler running while a direct run is between two messages
// still commits them (nothing handled twice after a clean stop).
func TestDirectDoneAreFlushedWithTheHeldCompletions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(nil)
		r := newRig(t, rec, nil)
		c := r.claim("t", 0)
		c.claim.send(t, "a", "b", "c")
		r.dispatch(c)
		synctest.Wait()
		if m := marked(c.p); m != 3 {
			t.Fatalf("committable %d, want 3", m)
		}
		// As a direct run leaves it between two messages: 3 and 4 done
		// (offsets the claim is about to deliver), not yet admitted.
		c.p.mu.Lock()
		c.p.directLast, c.p.directDone = 4, 2
		c.p.mu.Unlock()
		if m := c.p.state.Snapshot().Marked; m != 3 {
			t.Fatalf("before the flush: committable %d, want 3", m)
		}
		if n := c.p.drain(time.Second); n != 0 {
			t.Fatalf("drain counted %d handlers running, want 0", n)
		}
		if m := c.p.state.Snapshot().Marked; m != 5 {
			t.Fatalf("after drain: committable %d, want 5 (the direct ones admitted)", m)
		}
		r.shutdown(t, c)
	})
}
