package engine

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/outbox"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/internal/txn"
	"github.com/kafkaworker/kafkaworker/retry"
)

// partState is where a claimed partition is in its life.
type partState int32

const (
	// partRunning: messages are admitted and handlers started.
	partRunning partState = iota
	// partDraining: no handler starts; running ones may still finish and
	// their offsets are marked.
	partDraining
	// partFenced: the claim is gone; results are discarded.
	partFenced
)

// partition holds one claim's state: the per-key FIFOs, the offset tracker
// from which the committable offset and the done-set are derived, and the
// in-flight budget. One mutex guards it all; the claim's dispatcher and the
// pool goroutines finishing its tasks take it briefly.
type partition struct {
	topic      string
	id         int32
	hop        forward.Hop        // source topic or retry tier
	fwd        *forward.Forwarder // nil when nothing is forwarded
	outputs    Emitter            // sends what handlers produced
	tierWatch  *TierWatch         // wakes an idle tier partition this worker forwards to; may be nil
	txn        *txn.Txn           // exactly-once: the open transaction; nil otherwise
	epoch      uint64             // the transaction epoch the partition was claimed in
	aborted    <-chan struct{}    // closed when that epoch's transaction aborts; nil without txn
	stats      *telemetry.Stats   // nil in unit tests
	pending    telemetry.Delta    // deliveries not yet added to stats; guarded by mu (see flushStats)
	all        *telemetry.Metrics
	tracing    telemetry.Tracing
	spanAttrs  []attribute.KeyValue // the span attributes shared by this partition's deliveries
	ordering   Ordering
	handler    handler.Handler
	batch      *batcher // batching: a BatchHandler's; nil for a Handler
	pool       *Pool
	log        *slog.Logger
	retry      func() backoff.BackOff
	clock      *Clock
	stuckAfter time.Duration // WORKER_STUCK_AFTER; 0: never reported

	ctx    context.Context // handlers' context; cancelled when the claim is given up
	cancel context.CancelFunc

	// state is the commit state: what is unfinished, marked, committed, and
	// the intake budget. It has its own lock, taken after mu when both are.
	state *commit.State[*task]
	sess  sarama.ConsumerGroupSession // the claim's session: member and generation, for the status page

	keys map[string]*keyState // the dispatcher's own: see keyOf

	// inFlightReported is this partition's share of the in-flight gauge;
	// the dispatcher's own (reportInFlight).
	inFlightReported int64

	mu         sync.Mutex   // guards the key FIFOs' contents, backingOff and free
	phase      atomic.Int32 // a partState; written under mu, read anywhere
	backingOff map[*task]*time.Timer
	runExit    chan struct{} // signalled when a handler returns while draining

	scratch, ready []*task           // admit's buffers, reused; only the dispatcher touches them
	offs           []int64           // admit's offsets buffer; only the dispatcher touches it
	spare          []task            // the unused rest of the last chunk of tasks; only the dispatcher touches it
	spareOut       []outbox.Delivery // their outboxes, one each (see nextTask)
	free           []*task           // done tasks, for the dispatcher to reuse; guarded by mu
	finished       []*task           // completed, their commit-state Finish pending (flushFinished); guarded by mu
	finishHs       []commit.Handle   // flushFinished's buffer; guarded by mu
	unfinished     int               // admitted and not completed (nor discarded); guarded by mu
	reuse          []*task           // takeFree's buffer; only the dispatcher touches it

	// Inline runs (inline.go): while inline is set, admit leaves the ready
	// messages in runQ for the dispatcher to run; both are the
	// dispatcher's. inlineSlots are the dispatching goroutines' run slots,
	// replaced (under mu) when one starts or exits, read without a lock.
	inline bool
	runQ   []*task
	// Direct runs (direct.go), guarded by mu: directDone messages ran
	// direct and are done, up to offset directLast, not yet admitted;
	// directSettled is the last direct message settled (done, admitted or
	// discarded), for the watchdog.
	directLast, directSettled int64
	directDone                int
	inlineSlots               atomic.Pointer[[]*runSlot]
	// lazyQ: runQ's messages were admitted lazy (lazy.go), and so are
	// those the stretch running them has not started. The dispatcher's.
	lazyQ     bool
	lazyReady []*task // releaseRest's buffer; the dispatcher's
}

// admit takes in, in order, as many of ms as the in-flight budget and the
// done-set's room allow, starts those whose key has no earlier message
// pending, and returns how many it took. full reports that intake must
// wait; a completion will then wake the dispatcher through state.Freed.
// Only the dispatcher calls admit.
func (p *partition) admit(ms []*sarama.ConsumerMessage) (n int, full bool) {
	var first, last int64
	if len(ms) > 0 {
		first, last = ms[0].Offset, ms[len(ms)-1].Offset
	}
	// Each message taken in may add a done range (a gap before it, or a
	// skipped offset): take no more than the done-set has room for.
	room, fit := p.state.Capacity(len(ms), last)
	ms = ms[:min(fit, len(ms))]
	p.mu.Lock()
	reuse := p.takeFree(min(room, len(ms)))
	// Only the dispatcher adds to what is unfinished (completions only
	// take from it): lazy now still holds when the tasks are chained below.
	lazy := p.admitsLazy()
	p.mu.Unlock()
	// Tasks are built outside the locks; the budget only grows meanwhile,
	// so those built will fit.
	built, offs := p.scratch[:0], p.offs[:0]
	for _, m := range ms {
		if p.state.Handles(m.Offset) {
			if len(built) == room {
				break
			}
			var t *task
			if len(reuse) > 0 {
				t, reuse = reuse[len(reuse)-1], reuse[:len(reuse)-1]
				t.recycle() // done and unreferenced since (see complete)
			} else {
				t = p.nextTask()
			}
			p.initTask(t, m)
			if lazy {
				t.lazy = true // no FIFO while it runs in its turn (lazy.go)
			} else {
				t.key = p.keyOf(m.Key)
			}
			built = append(built, t)
		}
		offs = append(offs, m.Offset)
		n++
	}
	now := p.clock.read()
	for _, t := range built {
		t.takenAt = now
	}
	hs, full := p.state.Admit(offs, built, n < len(ms), first)
	for i, t := range built {
		t.node = hs[i]
	}

	p.mu.Lock()
	ready := p.ready[:0]
	for _, t := range built {
		switch {
		case lazy:
			ready = append(ready, t) // all of them, in offset order: to runQ below
		case p.chain(t):
		case p.batch != nil:
			p.addGathered(t) // before its key's next one is chained: it joins t
		default:
			ready = append(ready, t)
		}
	}
	var lots []*lot
	if p.batch != nil {
		lots = p.cutReady()
	}
	p.lazyQ = p.lazyQ || lazy && len(built) > 0
	p.unfinished += len(built)
	p.pending.AddConsumed(n)
	if p.unfinished == 0 {
		p.flushStats() // nothing in flight will flush them (skipped offsets only)
	}
	p.free = append(p.free, reuse...) // taken but not needed
	if full {
		// The budget counted completions held back (settle): pass them
		// on, which wakes the dispatcher at once if they free room.
		p.flushFinished()
	}
	p.mu.Unlock()

	if p.inline {
		p.runQ = append(p.runQ, ready...) // the dispatcher runs them (inline.go)
	} else {
		p.pool.pushAll(ready)
	}
	p.pushLots(lots)
	// built and ready are not cleared: what they hold past their length
	// the partition holds anyway (in flight, or free with its record let
	// go of by flushFinished), and clearing costs a write barrier per
	// pointer while the GC marks. So for runQ and finished.
	p.scratch, p.ready, p.offs = built[:0], ready[:0], offs[:0]
	return n, full
}

// inMemory is how many messages the partition holds: taken and not done.
func (p *partition) inMemory() int { return p.state.Held() }

// runTask is what the pool runs: t's delivery by its partition.
func runTask(t *task, slot *runSlot) *task {
	if t.lot != nil {
		return t.part.runLot(t.lot, slot)
	}
	return t.part.run(t, slot)
}

// run delivers t to the handler and records the outcome. It returns the
// next task of t's key when that may start now, for the caller to run.
// slot is the calling goroutine's: it names p while a handler runs, which is
// how drain counts them.
func (p *partition) run(t *task, slot *runSlot) *task {
	// Published before the state is read, so that drain, which sets the
	// state first and then reads the slots, cannot miss a handler about to
	// start.
	slot.part.Store(partID(p))
	slot.runs.Add(1)
	if p.loadState() != partRunning || p.notDue(t) {
		p.finishRun(slot)
		return nil
	}

	return p.settleRun(t, p.deliver(t), slot)
}

// settleRun records the outcome err of t's delivery: done, scheduled for
// its retry, or discarded once the partition was fenced; and ends the run.
// It returns the next task of t's key when that may start now.
func (p *partition) settleRun(t *task, err error, slot *runSlot) *task {
	p.mu.Lock()
	p.record(t)
	var next *task
	idle := false
	state := p.loadState() // changes only under p.mu
	switch {
	case state == partFenced:
		// The claim was given up while the handler ran: discard.
	case err == nil:
		next, idle = p.complete(t)
	case state == partRunning && !errors.Is(err, errTxnAborted):
		if t.lazy {
			// It stays unfinished: chained, so that the later messages of
			// its key wait for its retry, and its stretch ends (lazy.go).
			// It waits for nothing itself: the stretch ran the earlier ones.
			p.chainLazy(t)
			slot.lazyBroke = true
		}
		p.scheduleRetry(t, err)
	}
	p.settle(err != nil, idle)
	p.leaveTxn(t, state != partFenced)
	var lots []*lot
	if p.batch != nil && next != nil && state == partRunning {
		lots, next = p.gather(next), nil
	}
	p.mu.Unlock()
	p.finishRun(slot)
	if state != partRunning {
		return nil
	}
	p.pushLots(lots)
	return next
}

// finishRun ends a run and, once draining, tells drain to count again.
func (p *partition) finishRun(slot *runSlot) {
	slot.part.Store(0)
	if p.loadState() != partRunning {
		select {
		case p.runExit <- struct{}{}:
		default: // drain has one wake-up pending already
		}
	}
}

func (p *partition) loadState() partState { return partState(p.phase.Load()) }

// setState changes the state; called with p.mu held.
func (p *partition) setState(s partState) { p.phase.Store(int32(s)) }

// reportInFlight moves the in-flight gauge by this partition's change since
// its last report: the gauge is shared by every partition (and by workers of
// the same group on one registry), so it is adjusted, never set, and not on
// every message. gone reports the partition's final zero.
func (p *partition) reportInFlight(gone bool) {
	if p.all == nil {
		return
	}
	now := int64(p.state.Held())
	if gone {
		now = 0
	}
	delta := now - p.inFlightReported
	p.inFlightReported = now
	p.all.AddInFlight(delta)
}

func (p *partition) call(ctx context.Context, t *task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &handler.PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	if n := t.base + t.attempt; n > 1 {
		ctx = retry.WithAttempt(ctx, n)
	}
	return p.handler.Handle(ctx, &t.msg)
}

// complete records t as done, moves the committable offset if t was the
// oldest unfinished message, and returns t's successor in its key's FIFO.
// It also reports whether nothing of p is left unfinished. Called with
// p.mu held.
func (p *partition) complete(t *task) (next *task, idle bool) {
	next = t.next
	t.lazy = false // done in its turn: nothing waits behind it (lazy.go)
	if ks := t.key; ks != nil && ks.last == t {
		ks.last = nil // t was the last pending message of its key: the key is idle
	}
	if next != nil {
		t.next = nil
	}
	if t.stuck {
		p.reportUnstuck(t)
	}
	// The commit state learns of t in a batch (flushFinished), which also
	// hands t to the dispatcher for reuse: by then nothing refers to t any
	// more: not its key (ks.last moved on or is nil), its predecessor (whose
	// next was cleared when it completed), the commit state, the pool's
	// queue or a retry timer, and run no longer touches it.
	p.finished = append(p.finished, t)
	p.unfinished--
	return next, p.unfinished == 0
}

// finishBatch is how many completions a partition holds back before it
// tells its commit state (see settle).
const finishBatch = 64

// settle passes what the partition's goroutines held back on: completions
// to the commit state when the partition has nothing left unfinished, when
// finishBatch accumulated, or when the dispatcher waits for budget; and
// recorded deliveries to the stats on a failure, when idle, or after
// statsBatch. The dispatcher also flushes the completions when a batch
// found the budget full, both on its tick (flushHeld), and drain both
// before the final commit, so the committable offset and the metrics trail
// completions by at most a batch or a tick (WORKER_COMMIT_INTERVAL) while
// busy, and not at all once idle or stopping. Called with p.mu held.
func (p *partition) settle(failed, idle bool) {
	if idle || len(p.finished) >= finishBatch || p.state.Starved() {
		p.flushFinished()
	}
	if failed || idle || p.pending.Len() >= statsBatch {
		p.flushStats()
	}
}

// flushFinished tells the commit state of the completions held back, in
// completion order and under one of its locks, and hands their tasks to
// the dispatcher for reuse. Called with p.mu held.
func (p *partition) flushFinished() {
	p.flushDirect()
	if len(p.finished) == 0 {
		return
	}
	hs := p.finishHs[:0]
	for _, t := range p.finished {
		hs = append(hs, t.node)
		// Let go of the record (and so of the sarama fetch buffer its key
		// and value are cut from) now, rather than when the task is reused:
		// nothing reads a finished task's message any more.
		t.msg.Key, t.msg.Value = nil, nil
		if t.msg.Headers != nil {
			t.msg.Headers = nil
		}
	}
	p.state.FinishAll(hs)
	p.free = append(p.free, p.finished...)
	p.finished, p.finishHs = p.finished[:0], hs[:0]
}

// flushHeld passes on everything settle held back: the dispatcher calls it
// at the start of its tick, so the lag, the status sample, the stuck watch
// and the next commit count every completion so far.
func (p *partition) flushHeld() {
	p.mu.Lock()
	p.flushFinished()
	p.flushStats()
	p.mu.Unlock()
}

// drain stops starting handlers, waits up to timeout for the running ones,
// then fences the partition and cancels the handlers' context. It returns
// how many handlers were still running, whose results will be discarded.
func (p *partition) drain(timeout time.Duration) int {
	p.mu.Lock()
	p.setState(partDraining)
	p.stopGathering()
	for t, timer := range p.backingOff {
		timer.Stop()
		delete(p.backingOff, t)
	}
	p.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	timedOut := false
	for !timedOut && p.running() > 0 {
		select {
		case <-p.runExit:
		case <-timer.C:
			timedOut = true
		}
	}

	p.mu.Lock()
	p.setState(partFenced)
	// Once running() read 0 after the state left partRunning, a goroutine
	// that publishes its slot later sees the drain and starts nothing
	// (run): counting again would count it, about to back out, as a
	// handler abandoned.
	abandoned := 0
	if timedOut {
		abandoned = p.running()
	}
	p.flushFinished() // before the final commit
	p.flushStats()    // before the claim's stats are retired
	p.mu.Unlock()
	p.cancel()
	return abandoned
}
