package engine

import (
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// Inline runs. While a partition's handler is fast, its dispatcher runs the
// messages it admits itself, on its own goroutine, rather than handing them
// to the pool: with a fast handler the hand-over costs more than the
// handler (a queue under a lock, a goroutine woken, the task's memory moved
// to another core); it was about half the CPU of a no-op message. While
// nothing of the partition is unfinished, it runs them before admitting
// them (direct.go); otherwise nothing changes: the same partition.run, the
// same key FIFOs (a key's next message starts only once the one before it
// completed; while the stretch runs them in offset order they are made
// only when needed: lazy.go), and
// the pool's seats bound the handlers running, inline ones included, to
// WORKER_CONCURRENCY.
//
// The dispatcher must go on reading its claim (sarama tells of a revocation
// only by closing Messages()), so inline runs are bounded three ways:
//
//   - a stretch (the messages one admission made ready, and the next
//     messages of their keys) stops after inlineBudget and hands its rest to
//     the pool; a read admitted a chunk (inlineChunk) at a time starts no
//     chunk inline past inlineBudget either: its rest goes to the pool
//     (dispatcher.admitAndRun);
//   - a stretch slower than inlineMaxAvg a message sends the partition's
//     messages to the pool for a cool-down (inlineCoolFirst, doubling up to
//     inlineCoolMax while stretches stay slow), after which one stretch tries
//     again;
//   - a handler that holds the dispatcher past handoffAfter loses it: a
//     watchdog hands the stretch's messages not yet started to the pool and
//     starts a new goroutine that dispatches on; the old one, once its
//     handler returns, hands its key's next message to the pool and exits.
//
// A handler that blocks so holds only its own key, as in the pool, and a
// stop still ends: ConsumeClaim waits for the dispatching, not for the
// goroutine it started on (dispatcher.run), a drain counts an inline
// handler as it counts the pool's (partition.running), and Pool.Stop waits
// for the goroutines as for its own (Pool.track).
//
// With exactly-once or a batch handler every message goes through the pool.
const (
	inlineMaxAvg    = 5 * time.Microsecond
	inlineBudget    = 500 * time.Microsecond
	inlineLookEvery = 16 // messages run between two looks at the clock
	handoffAfter    = 2 * time.Millisecond
	inlineCoolFirst = 10 * time.Millisecond
	inlineCoolMax   = time.Second
	// inlineChunk is how many messages a dispatcher admits at most before
	// running them inline: the same few tasks are reused while still in
	// the cache, and a partition holds few of them.
	inlineChunk = 64
)

// inlineRun.pos holds the stretch's generation (high 32 bits), stretchOver,
// and the index of its next message (low 31 bits).
const (
	stretchOver = 1 << 31
	stretchIdx  = stretchOver - 1
	stretchGen  = 1 << 32
)

// inlineRun is one dispatching goroutine's running of messages inline.
type inlineRun struct {
	d    *dispatcher
	slot *runSlot // names the partition while a handler runs here (partition.running)
	// q is the stretch's messages, in admission order; pos is the next one
	// to start, or'ed with stretchOver when the stretch ended or the
	// watchdog took the rest (handoff). The run claims each message by
	// moving pos, so that exactly one of it and the watchdog starts it.
	// pos carries the stretch's generation and began its start, so that a
	// watchdog that fires as one stretch ends cannot take the next one.
	q []*task
	// direct is a direct run's messages (direct.go), from the overflow at
	// directFrom, instead of q; scratch is the task they run on in turn.
	direct     []*sarama.ConsumerMessage
	directFrom int
	scratch    *task
	pos        atomic.Uint64
	began      atomic.Int64 // time.Since(clockAnchor) at the stretch's start
	gen        uint64
	watchdog   *time.Timer // handoff, armed while a stretch runs
	seated     bool        // holds one of the pool's seats
	tracked    bool        // counted by the pool (Pool.track)
}

// dispatch starts a goroutine that dispatches until the dispatching ends,
// then closes d.ended, or until it loses the dispatching to a handoff.
func (d *dispatcher) dispatch() {
	r := &inlineRun{d: d, slot: d.p.addInlineSlot(), tracked: d.p.pool.track()}
	r.pos.Store(stretchOver)
	r.watchdog = time.AfterFunc(time.Hour, r.handoff)
	r.watchdog.Stop()
	go func() {
		defer r.exit()
		if d.loop(r) {
			close(d.ended)
		}
	}()
}

// exit ends the goroutine's part: its seat, its slot, its count in the pool.
func (r *inlineRun) exit() {
	r.watchdog.Stop()
	r.unseat()
	r.d.p.removeInlineSlot(r.slot)
	if r.tracked {
		r.d.p.pool.untrack()
	}
}

// seat reports whether the next admission's ready messages run inline:
// the partition allows it and a seat is free. The dispatcher calls it
// before admitting.
func (r *inlineRun) seat() bool {
	d := r.d
	if d.p.txn != nil || d.p.batch != nil || d.cool > 0 && d.p.clock.read() < d.poolUntil {
		return false
	}
	if !r.seated {
		// A pool goroutine waiting for a seat, with work queued, goes
		// first: a dispatcher that took the seat back at once after each
		// stretch would starve it. (Work merely queued, with seats free,
		// is the pool's to pick up; refusing then would send every
		// partition to the pool while it has any backlog.)
		r.seated = d.p.pool.seatWaiters.Load() == 0 && d.p.pool.takeSeat()
	}
	return r.seated
}

// unseat gives the seat back.
func (r *inlineRun) unseat() {
	if r.seated {
		r.seated = false
		r.d.p.pool.giveSeat()
	}
}

// runReady runs the messages admit held back (partition.runQ) and gives the
// seat back. It reports false when this goroutine lost the dispatching to
// a handoff meanwhile: it must then touch nothing of the dispatcher's.
func (r *inlineRun) runReady() bool {
	p := r.d.p
	p.inline = false
	if len(p.runQ) > 0 && !r.stretch(p.runQ) {
		return false
	}
	p.runQ, p.lazyQ = p.runQ[:0], false
	r.unseat()
	return true
}

// stretch runs q and the next messages of their keys, inline, within the
// bounds above. It reports false when the watchdog took the dispatching.
func (r *inlineRun) stretch(q []*task) bool {
	p := r.d.p
	r.q = q
	began := r.beginStretch()
	ran, over := 0, false
	for !over {
		t := r.claim()
		if t == nil {
			break
		}
		for t != nil {
			t = p.run(t, r.slot)
			ran++
			if ran%inlineLookEvery == 0 {
				over = time.Since(clockAnchor)-began > inlineBudget
			}
			over = over || r.slot.lazyBroke // the rest is chained (lazy.go)
			if t != nil && (over || r.pos.Load()&stretchOver != 0) {
				p.pool.push(t) // its key's next message, to the pool
				t = nil
			}
		}
	}
	return r.end(time.Since(clockAnchor)-began, ran)
}

// beginStretch starts a stretch (or a direct run, direct.go): a new
// generation, its start for the watchdog, which it arms. It returns the
// start.
func (r *inlineRun) beginStretch() time.Duration {
	began := time.Since(clockAnchor)
	r.began.Store(int64(began))
	r.gen++
	r.pos.Store(r.gen * stretchGen)
	r.watchdog.Reset(handoffAfter)
	r.slot.lazyBroke = false
	return began
}

// claim returns the stretch's next message, or nil when none is left or
// the watchdog took them. The message is read before it is claimed: once
// the watchdog saw the claim, a new dispatcher may reuse q.
func (r *inlineRun) claim() *task {
	for {
		v := r.pos.Load()
		if v&stretchOver != 0 || int(v&stretchIdx) == len(r.q) {
			return nil
		}
		if t := r.q[v&stretchIdx]; r.pos.CompareAndSwap(v, v+1) {
			return t
		}
	}
}

// end closes the stretch: it hands what was not started (over budget) to
// the pool and judges the handler's speed. It reports false when the
// watchdog had taken the dispatching.
func (r *inlineRun) end(took time.Duration, ran int) bool {
	v := r.pos.Or(stretchOver)
	r.watchdog.Stop()
	if v&stretchOver != 0 {
		return false
	}
	r.d.p.releaseRest(nil, r.q[v&stretchIdx:])
	r.q = nil
	if ran > 0 {
		r.d.judge(took > time.Duration(ran)*inlineMaxAvg)
	}
	return true
}

// handoff is the watchdog: a handler ran inline for handoffAfter. It takes
// the stretch's messages not started to the pool, sends the partition's
// next messages there for a cool-down, and starts a new dispatching
// goroutine. The old one no longer touches the dispatcher once it sees
// stretchOver, so the dispatcher's fields are this function's, then the new
// goroutine's.
func (r *inlineRun) handoff() {
	i, ok := r.takeOver()
	if !ok {
		return
	}
	d := r.d
	if r.direct != nil {
		r.handoffDirect(i)
		d.judge(true)
		d.dispatch()
		return
	}
	var running *task
	if i > 0 {
		running = r.q[i-1] // or done already: releaseRest tells
	}
	d.p.releaseRest(running, r.q[i:])
	d.p.runQ, d.p.lazyQ = nil, false // the old goroutine may still read q's array (claim)
	d.judge(true)
	d.dispatch()
}

// takeOver ends the running stretch for the watchdog and returns the index
// of its first message not started. It fails when no stretch runs, or when
// the one running began less than handoffAfter ago: the timer fired for an
// earlier stretch as it ended, and this one's own is armed.
func (r *inlineRun) takeOver() (int, bool) {
	for {
		v := r.pos.Load()
		if v&stretchOver != 0 {
			return 0, false
		}
		if time.Since(clockAnchor)-time.Duration(r.began.Load()) < handoffAfter {
			return 0, false // began is v's stretch's or a later one's
		}
		if r.pos.CompareAndSwap(v, v|stretchOver) {
			return int(v & stretchIdx), true
		}
	}
}

// judge sets how the next messages run after a stretch: inline, or, when
// it was slow, in the pool for a cool-down that doubles while stretches
// stay slow.
func (d *dispatcher) judge(slow bool) {
	if !slow {
		d.cool = 0
		return
	}
	d.cool = min(max(2*d.cool, inlineCoolFirst), inlineCoolMax)
	d.poolUntil = d.p.clock.read() + d.cool
}

// addInlineSlot makes the run slot of a new dispatching goroutine, which
// running counts.
func (p *partition) addInlineSlot() *runSlot {
	slot := new(runSlot)
	p.mu.Lock()
	defer p.mu.Unlock()
	var slots []*runSlot
	if old := p.inlineSlots.Load(); old != nil {
		slots = append(slots, *old...)
	}
	slots = append(slots, slot)
	p.inlineSlots.Store(&slots)
	return slot
}

// removeInlineSlot forgets the slot of a goroutine that exits.
func (p *partition) removeInlineSlot(slot *runSlot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var slots []*runSlot
	for _, s := range *p.inlineSlots.Load() {
		if s != slot {
			slots = append(slots, s)
		}
	}
	p.inlineSlots.Store(&slots)
}

// running counts the handlers of p running now, in the pool or inline.
func (p *partition) running() int {
	n, id := p.pool.runningIn(p), partID(p)
	if slots := p.inlineSlots.Load(); slots != nil {
		for _, s := range *slots {
			if s.part.Load() == id {
				n++
			}
		}
	}
	return n
}
