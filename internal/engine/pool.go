package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Pool runs handler goroutines, shared by all partitions of a worker. Tasks
// reach it through a FIFO ready queue that never blocks the pusher: a
// partition's dispatcher must keep reading its claim (to notice revocation)
// whatever the handlers are doing. The queue's length is bounded anyway,
// because every queued task holds a slot of its partition's in-flight budget.
type Pool struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []*task
	head   int
	closed bool
	idle   int // goroutines waiting in pop

	waiting atomic.Int64 // len(items) - head, readable without the lock
	// seats is how many more handlers may start: WORKER_CONCURRENCY, less
	// the goroutines running tasks (a pool goroutine holds a seat from the
	// task it takes to the moment it goes idle) and the dispatchers running
	// their partition's messages inline (inline.go), so that both together
	// never run more handlers than the pool has goroutines.
	seats atomic.Int64
	// seatWaiters counts goroutines in pop that wait for a seat while tasks
	// are queued: the dispatchers leave the seats to them (inlineRun.seat).
	seatWaiters atomic.Int64
	stopped     atomic.Bool // set by stop: nothing more starts
	wg          sync.WaitGroup

	// slots has one entry per goroutine: the partition whose handler it is
	// running, so that a partition can count its running handlers (see
	// partition.run) without a counter every goroutine writes.
	slots []runSlot

	// run runs one task on the calling goroutine (slot is its own) and
	// returns the next task of its key when that may start at once.
	run func(t *task, slot *runSlot) (next *task)

	// Waking goroutines for a batch (see pushAll).
	wakeAtOnce int         // how many idle goroutines a batch wakes at once
	seen       []uint64    // each slot's runs at the last look; guarded by mu
	nudgeArmed atomic.Bool // the nudge timer runs
	nudgeTimer *time.Timer
}

// nudgeAfter is how long the tasks of a batch wait for the goroutines
// already awake before idle ones are woken for them (see pushAll).
const nudgeAfter = time.Millisecond

// runSlot is what one pool goroutine is running: a partition's identity
// (its address, see partID), or 0. It is an integer rather than a pointer
// so that its two writes per message need no GC write barrier; each slot
// fills a cache line of its own.
type runSlot struct {
	part atomic.Uintptr
	runs atomic.Uint64 // runs started: the nudge tells a long one by it
	// lazyBroke: a lazy message this goroutine ran failed, and was chained
	// (lazy.go): its stretch must end. Only the slot's goroutine touches it.
	lazyBroke bool
	_         [47]byte
}

// partID is part's identity in a runSlot. Go's heap objects do not move,
// and whoever compares holds part, so the address cannot be reused
// meanwhile.
func partID(part *partition) uintptr { return uintptr(unsafe.Pointer(part)) }

// NewPool starts concurrency handler goroutines, which run each task with
// its partition's delivery (runTask).
func NewPool(concurrency int) *Pool { return newPool(concurrency, runTask) }

// newPool starts concurrency goroutines that run each task with run.
func newPool(concurrency int, run func(*task, *runSlot) *task) *Pool {
	p := &Pool{
		run:   run,
		slots: make([]runSlot, concurrency), seen: make([]uint64, concurrency),
		wakeAtOnce: max(1, runtime.GOMAXPROCS(0)),
	}
	p.seats.Store(int64(concurrency))
	p.cond.L = &p.mu
	p.nudgeTimer = time.AfterFunc(time.Hour, p.nudge)
	p.nudgeTimer.Stop()
	p.wg.Add(concurrency)
	for i := range concurrency {
		go p.loop(&p.slots[i])
	}
	return p
}

// runningIn counts the goroutines running a handler of part.
func (p *Pool) runningIn(part *partition) int {
	n, id := 0, partID(part)
	for i := range p.slots {
		if p.slots[i].part.Load() == id {
			n++
		}
	}
	return n
}

// push hands a task to the first free goroutine.
func (p *Pool) push(t *task) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return // stopping: the message stays unmarked for the next owner
	}
	p.items = append(p.items, t)
	p.waiting.Add(1)
	p.mu.Unlock()
	p.cond.Signal()
}

// pushAll hands several tasks over under one lock.
//
// It wakes at most wakeAtOnce (GOMAXPROCS) idle goroutines, not one per
// task: with short handlers a few awake goroutines empty the queue at full
// speed, and waking one per task would cost a park and a wake-up per
// message and make them fight for the locks. When it leaves tasks to the
// goroutines already awake, it arms the nudge, which wakes idle goroutines
// for every waiting task once a handler has run for nudgeAfter: handlers
// that block or take long get the whole pool's concurrency within a
// millisecond or two.
func (p *Pool) pushAll(ts []*task) {
	if len(ts) == 0 {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.items = append(p.items, ts...)
	p.waiting.Add(int64(len(ts)))
	need := min(len(ts), p.idle)
	wake := min(need, p.wakeAtOnce)
	arm := wake < need && !p.nudgeArmed.Load()
	if arm {
		p.nudgeArmed.Store(true)
		p.longRuns() // note where each goroutine is now
	}
	p.mu.Unlock()
	for range wake {
		p.cond.Signal()
	}
	if arm {
		p.nudgeTimer.Reset(nudgeAfter)
	}
}

// nudge runs nudgeAfter after pushAll left tasks to the awake goroutines,
// and again every nudgeAfter while tasks wait and goroutines idle. If a
// goroutine is still in the handler it was in at the last look, handlers
// are slow enough for concurrency to pay: it wakes an idle goroutine for
// each waiting task.
func (p *Pool) nudge() {
	p.mu.Lock()
	need := min(len(p.items)-p.head, p.idle)
	slow := p.longRuns()
	again := need > 0 && !slow && !p.closed
	if !again {
		p.nudgeArmed.Store(false)
	}
	p.mu.Unlock()
	if again {
		p.nudgeTimer.Reset(nudgeAfter)
		return
	}
	for range need {
		p.cond.Signal()
	}
}

// longRuns reports whether a goroutine is in the same run as at the last
// call, and notes where each is now. Called with mu held.
func (p *Pool) longRuns() bool {
	long := false
	for i := range p.slots {
		runs := p.slots[i].runs.Load()
		if p.slots[i].part.Load() != 0 && runs == p.seen[i] {
			long = true
		}
		p.seen[i] = runs
	}
	return long
}

// pop takes the next task, waiting for one, and for a seat unless the
// caller holds one (*seated). A goroutine that goes idle gives its seat back.
func (p *Pool) pop(seated *bool) (*task, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && (p.head == len(p.items) || !*seated && !p.takeSeat()) {
		if *seated {
			p.seats.Add(1) // idle: an inline run may use the seat meanwhile
			*seated = false
		}
		starved := p.head != len(p.items)
		if starved {
			p.seatWaiters.Add(1)
		}
		p.idle++
		p.cond.Wait()
		p.idle--
		if starved {
			p.seatWaiters.Add(-1)
		}
	}
	if p.closed {
		return nil, false
	}
	*seated = true
	t := p.items[p.head]
	p.items[p.head] = nil
	p.head++
	p.waiting.Add(-1)
	switch {
	case p.head == len(p.items):
		p.items, p.head = p.items[:0], 0
	case p.head >= 1024 && p.head*2 >= len(p.items):
		n := copy(p.items, p.items[p.head:])
		clear(p.items[n:])
		p.items, p.head = p.items[:n], 0
	}
	return t, true
}

// takeSeat takes a seat if one is free.
func (p *Pool) takeSeat() bool {
	if p.seats.Add(-1) >= 0 {
		return true
	}
	p.seats.Add(1)
	return false
}

// giveSeat gives back a seat taken with takeSeat outside the pool (an
// inline run) and wakes a goroutine when tasks wait, which may have gone
// idle for want of it. The lock orders the wake-up after a waiting
// goroutine's look at the seats, so that it cannot be missed.
func (p *Pool) giveSeat() {
	p.seats.Add(1)
	if p.waiting.Load() > 0 {
		p.mu.Lock()
		p.mu.Unlock() //nolint:staticcheck // an empty section: see above
		p.cond.Signal()
	}
}

// track counts a goroutine outside the pool that runs handlers (a
// dispatcher's, inline.go), so that Stop waits for it as for its own. It
// reports false once the pool is stopped: the goroutine then is not waited
// for.
func (p *Pool) track() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	return true
}

// untrack ends what track counted.
func (p *Pool) untrack() { p.wg.Done() }

// maxInlineRun is how many messages of one key a goroutine runs back to
// back while other tasks wait, before it sends the key's next message to
// the back of the queue.
const maxInlineRun = 16

// loop runs tasks until the pool stops. A task that finishes may hand back
// the next message of its key. That one runs on the same goroutine at once,
// which saves a trip through the queue, for up to maxInlineRun messages in
// a row while other tasks wait (any number when none waits); then it goes
// to the back of the queue, so a key with a long backlog cannot hold a
// goroutine while other keys and partitions starve: they wait for at most
// maxInlineRun of its messages.
func (p *Pool) loop(slot *runSlot) {
	defer p.wg.Done()
	seated := false
	for {
		t, ok := p.pop(&seated)
		if !ok {
			return
		}
		for run := 1; t != nil; run++ {
			next := p.run(t, slot)
			if p.stopped.Load() {
				break // a key's next message does not start after stop either
			}
			if next != nil && run >= maxInlineRun && p.waiting.Load() > 0 {
				p.push(next)
				next = nil
			}
			t = next
		}
	}
}

// Stop lets every goroutine finish its current task and exit, waiting at most
// grace. It reports whether all exited; the ones that did not are running a
// handler that ignored its cancelled context.
func (p *Pool) Stop(grace time.Duration) bool {
	p.stopped.Store(true)
	p.nudgeTimer.Stop()
	p.mu.Lock()
	p.closed = true
	clear(p.items)
	p.items, p.head = nil, 0
	p.waiting.Store(0)
	p.mu.Unlock()
	p.cond.Broadcast()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}
