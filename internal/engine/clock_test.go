package engine

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Readers racing with stop, as handlers abandoned at shutdown do (wake's
// wg.Add must never run beside stop's wg.Wait; the command's tests caught
// that under -race, this test hits the window only rarely). After stop,
// reads are exact and no ticking goroutine is left.
func TestCoarseClockReadsRacingStop(t *testing.T) {
	t.Parallel()
	for range 50 {
		c := &Clock{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				<-start
				for range 200 {
					c.read()
				}
			})
		}
		close(start)
		c.Stop()
		wg.Wait()
		if c.running.Load() {
			t.Fatal("the clock ticks after stop")
		}
		before := time.Since(clockAnchor)
		if got := c.read(); got < before {
			t.Fatalf("read after stop = %v, want the exact clock (at least %v)", got, before)
		}
	}
}

// The clock follows time to within a tick while read, parks after
// coarseIdleTicks without a reader, and the next read starts it again.
func TestCoarseClockTicksParksAndWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &Clock{}
		defer c.Stop()
		first := c.read()
		time.Sleep(10*coarseTick + coarseTick/2)
		if got := c.read() - first; got < 10*coarseTick || got > 11*coarseTick {
			t.Fatalf("after 10.5 ticks the clock moved %v, want 10 to 11 ticks", got)
		}
		time.Sleep((coarseIdleTicks + 2) * coarseTick)
		synctest.Wait()
		if c.running.Load() {
			t.Fatalf("the clock still ticks after %d ticks without a reader", coarseIdleTicks+2)
		}
		now := time.Since(clockAnchor)
		if got := c.read(); got != now {
			t.Fatalf("the first read after parking = %v, want the exact clock %v", got, now)
		}
		if !c.running.Load() {
			t.Fatal("a read did not start the parked clock")
		}
	})
}
