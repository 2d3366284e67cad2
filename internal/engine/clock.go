package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// coarseTick is how often the coarse clock is refreshed.
const coarseTick = time.Millisecond

// coarseIdleTicks is how many ticks without a reader park the clock.
const coarseIdleTicks = 200

// Clock is the clock of delivery timing: reading it is an atomic load
// instead of a system clock read (two of those per delivery cost about a
// tenth of a microsecond on a virtual machine, a third of a no-op
// delivery's cost). It reads time.Since(clockAnchor) as of the last tick,
// so a duration measured with it is exact to about coarseTick (more on a
// machine so loaded that the ticking goroutine runs late); the smallest
// duration bucket is 5ms. The ticking goroutine parks after
// coarseIdleTicks without a reader and the next reader wakes it, so an
// idle worker costs nothing. A nil *Clock reads the exact clock.
type Clock struct {
	now     atomic.Int64 // time.Since(clockAnchor) at the last tick
	used    atomic.Bool  // read since the last tick
	running atomic.Bool  // the ticking goroutine runs
	stopped atomic.Bool
	// mu orders a start of the ticking goroutine (wake) against stop, so
	// that stop's wg.Wait never runs beside a wg.Add (a handler abandoned
	// at shutdown may read the clock while the worker stops it).
	mu sync.Mutex
	wg sync.WaitGroup
}

// read returns the time since clockAnchor.
func (c *Clock) read() time.Duration {
	if c == nil {
		return time.Since(clockAnchor)
	}
	if !c.running.Load() {
		return c.wake()
	}
	if !c.used.Load() {
		c.used.Store(true)
	}
	return time.Duration(c.now.Load())
}

// wake starts the ticking goroutine unless the clock stopped, and reads the
// exact clock meanwhile.
func (c *Clock) wake() time.Duration {
	now := time.Since(clockAnchor)
	if c.stopped.Load() {
		return now
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped.Load() && c.running.CompareAndSwap(false, true) {
		c.now.Store(int64(now))
		c.used.Store(true)
		c.wg.Add(1)
		go c.tick()
	}
	return now
}

func (c *Clock) tick() {
	defer c.wg.Done()
	t := time.NewTicker(coarseTick)
	defer t.Stop()
	idle := 0
	for range t.C {
		c.now.Store(int64(time.Since(clockAnchor)))
		switch {
		case c.stopped.Load():
			c.running.Store(false)
			return
		case c.used.Swap(false):
			idle = 0
		default:
			if idle++; idle >= coarseIdleTicks {
				c.running.Store(false)
				return
			}
		}
	}
}

// Stop ends the ticking goroutine and waits for it; reads after stop read
// the exact clock.
func (c *Clock) Stop() {
	c.mu.Lock()
	c.stopped.Store(true)
	c.mu.Unlock()
	c.wg.Wait()
}
