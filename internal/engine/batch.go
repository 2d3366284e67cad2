package engine

import (
	"cmp"
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/retry"
)

// This file holds the batch path (worker.NewBatch: a handler.BatchHandler).
// A partition's ready messages are not pushed to the pool one by one but
// gathered (batcher.gathered, in offset order per key) and cut into lots of up to
// Max messages, when Max are gathered or Wait after the first; a lot runs
// on one pool goroutine as one HandleBatch call.
//
// Key order: a message whose key's earlier message is gathered (not yet
// running) is gathered too, behind it, so a lot may hold several messages
// of a key in offset order. When a lot is cut, the gathered messages of the
// keys it holds are taken back out (ungathered): they wait in their key's
// FIFO, as with a Handler, until the lot is done, so a key is never in two
// lots at once. A message whose run in a lot did not end done (failed in
// place, not yet due, given up) holds back the later messages of its key in
// that lot: they are not counted as delivered and run again behind it.
//
// Messages that need no handler (a failed publish to a retry tier, retried)
// still run one by one through run.

// Batch is how a partition batches: set (Params.Batch) when the worker runs
// a handler.BatchHandler.
type Batch struct {
	Handler handler.BatchHandler
	Max     int           // WORKER_BATCH_MAX: messages per HandleBatch call at most
	Wait    time.Duration // WORKER_BATCH_WAIT: how long a gathered message waits for a fuller lot
}

// batcher is a partition's gathering of ready messages into lots. Its
// fields are guarded by the partition's mu.
type batcher struct {
	Batch
	ctx      context.Context // the handler's: the partition's, where worker.Produce says it is unsupported
	gathered []*task         // ready, in offset order per key, in no lot yet
	timer    *time.Timer     // cuts what is gathered Wait after the first; nil until first armed
	armed    bool
}

// lot is one batch: its tasks in offset order, and the messages handed to
// HandleBatch (those of the tasks that run). A lot is carried to the pool
// by its first task (lead), whose lot field points back at it.
type lot struct {
	tasks []*task
	msgs  []*handler.Message
	ran   []*task // the tasks of msgs
	errs  []error // each ran task's result
	later []*task // not due yet: a retry tier's, waiting for their due time
}

// gather adds ready tasks and returns the lots now cut: full ones, or
// everything when no wait applies. Called with p.mu held; the caller
// pushes the lots once it released it (pushLots).
func (p *partition) gather(ready ...*task) []*lot {
	for _, t := range ready {
		p.addGathered(t)
	}
	return p.cutReady()
}

// addGathered gathers t, whose key has no earlier message pending outside
// the gathered ones, with the later messages of its key that wait behind
// it: they may share its lot. Called with p.mu held.
func (p *partition) addGathered(t *task) {
	b := p.batch
	for ; t != nil && !t.gathered && t.lot == nil; t = t.next {
		t.gathered = true
		b.gathered = append(b.gathered, t)
	}
}

// cutReady cuts the lots that are due: full ones, or all when no wait
// applies, and arms the wait for what is left. A partition whose in-flight
// budget is used up still waits for full lots: cutting what is gathered at
// once then made lots of a few messages each (the budget freed by one lot
// came back as the next), which paid the handler's fixed cost per call
// for almost nothing (the batch bench fell from 24x the Handler to 5x).
// Called with p.mu held.
func (p *partition) cutReady() []*lot {
	b := p.batch
	if len(b.gathered) == 0 || p.loadState() != partRunning {
		return nil
	}
	lots := p.cut(b.Wait <= 0)
	if len(b.gathered) > 0 && !b.armed {
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(b.Wait, p.cutWaited)
		} else {
			b.timer.Reset(b.Wait)
		}
	}
	return lots
}

// cutWaited cuts what waited its Wait.
func (p *partition) cutWaited() {
	p.mu.Lock()
	p.batch.armed = false
	var lots []*lot
	if p.loadState() == partRunning {
		lots = p.cut(true)
	}
	p.mu.Unlock()
	p.pushLots(lots)
}

// cut takes lots of up to Max from the front of the gathered messages: all
// of them when all is set, else only full ones. A key in a lot is in no
// other: when a lot is cut, its keys' gathered later messages go back to
// waiting in their FIFO, behind it, before the next lot is cut. Called
// with p.mu held.
func (p *partition) cut(all bool) []*lot {
	b := p.batch
	var lots []*lot
	avail, i := len(b.gathered), 0
	for avail >= b.Max || (all && avail > 0) {
		l := &lot{tasks: make([]*task, 0, min(b.Max, avail))}
		for ; len(l.tasks) < b.Max && i < len(b.gathered); i++ {
			if t := b.gathered[i]; t.gathered {
				t.gathered, t.lot = false, l
				l.tasks = append(l.tasks, t)
			}
		}
		avail -= len(l.tasks)
		for _, t := range l.tasks {
			for n := t.next; n != nil && n.gathered; n = n.next {
				n.gathered = false
				avail--
			}
		}
		// Gathered in offset order per key (a key's next message joins
		// only behind it), not across keys: a retried message comes back
		// after later ones. HandleBatch gets them in offset order.
		slices.SortFunc(l.tasks, func(a, b *task) int { return cmp.Compare(a.msg.Offset, b.msg.Offset) })
		lots = append(lots, l)
	}
	if len(lots) == 0 {
		return nil
	}
	kept := b.gathered[:0]
	for _, t := range b.gathered[i:] {
		if t.gathered {
			kept = append(kept, t)
		}
	}
	clear(b.gathered[len(kept):])
	b.gathered = kept
	return lots
}

// pushLots hands cut lots to the pool. Called without p.mu.
func (p *partition) pushLots(lots []*lot) {
	for _, l := range lots {
		p.pool.push(l.tasks[0])
	}
}

// stopGathering drops what is gathered: it never started, so it stays
// unmarked for the partition's next owner. Called with p.mu held.
func (p *partition) stopGathering() {
	b := p.batch
	if b == nil {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.armed = false
	for _, t := range b.gathered {
		t.gathered = false
	}
	clear(b.gathered)
	b.gathered = b.gathered[:0]
}

// runLot delivers a lot: one HandleBatch call for its tasks that are due,
// then each one's outcome as run records a single delivery's.
func (p *partition) runLot(l *lot, slot *runSlot) *task {
	slot.part.Store(partID(p))
	slot.runs.Add(1)
	if p.loadState() != partRunning {
		p.mu.Lock()
		p.dropLot(l)
		p.mu.Unlock()
		p.finishRun(slot)
		return nil
	}
	p.selectDue(l)
	if len(l.ran) > 0 {
		p.deliverLot(l)
	}
	p.mu.Lock()
	state := p.loadState()
	var lots []*lot
	for i, t := range l.ran {
		lots = append(lots, p.settleInLot(l, t, l.errs[i], state)...)
	}
	p.dropLot(l)
	if state == partRunning {
		p.scheduleLater(l)
	}
	releaseKeys(l)
	p.mu.Unlock()
	p.finishRun(slot)
	if state == partRunning {
		p.pushLots(lots)
	}
	return nil
}

// selectDue picks the lot's tasks that run now: not those a retry tier
// holds until their due time (l.later), nor the later ones of their keys.
func (p *partition) selectDue(l *lot) {
	for _, t := range l.tasks {
		if t.heldBack(l) {
			continue
		}
		if !t.notBefore.IsZero() {
			if time.Until(t.notBefore) > 0 {
				t.holdKey(l)
				l.later = append(l.later, t)
				continue
			}
			t.notBefore = time.Time{}
		}
		l.ran = append(l.ran, t)
		l.msgs = append(l.msgs, &t.msg)
	}
}

// scheduleLater schedules the lot's tasks that were not due for their due
// time, when no earlier message of their key in the lot is pending (those
// wait behind it, and are gathered with it). Called with p.mu held, after
// dropLot, so the timer finds them in no lot.
func (p *partition) scheduleLater(l *lot) {
	for _, t := range l.later {
		if t.heldBack(l) {
			continue
		}
		p.backingOff[t] = time.AfterFunc(max(time.Until(t.notBefore), 0), func() { p.retryDue(t) })
	}
}

// holdKey marks t's key as held back in l from t on: l's later messages of
// the key do not count.
func (t *task) holdKey(l *lot) {
	ks := t.key
	if ks == nil {
		return
	}
	if ks.heldIn != l || t.msg.Offset < ks.heldFrom {
		ks.heldIn, ks.heldFrom = l, t.msg.Offset
	}
}

// heldBack reports whether an earlier message of t's key in l did not end
// done.
func (t *task) heldBack(l *lot) bool {
	ks := t.key
	return ks != nil && ks.heldIn == l && t.msg.Offset > ks.heldFrom
}

// deliverLot calls HandleBatch with the lot's due messages and sets each
// one's result (l.errs), forwarding those that failed for good on this
// hop; like deliver, nil means done. Each message's span, a child of the
// batch's, covers the call and its own outcome.
func (p *partition) deliverLot(l *lot) {
	ctx, span := p.tracing.StartBatch(p.batch.ctx, l.msgs, p.spanAttrs)
	began := p.clock.read()
	spans := make([]msgSpan, len(l.ran))
	for i, t := range l.ran {
		t.attempt++
		t.attemptShown.Store(int32(t.attempt))
		if t.attempt == 1 {
			t.delay, t.hasDelay = messageDelay(began, t.msg.Timestamp)
		}
		spans[i].ctx, spans[i].span = p.tracing.StartInBatch(ctx, &t.msg, p.spanAttrs)
	}
	err := p.callBatch(ctx, l)
	took := p.clock.read() - began
	l.errs = resultsOf(err, len(l.ran))
	p.all.ObserveBatch(p.topic, len(l.ran), took, batchOutcome(err, l.errs))
	for i, t := range l.ran {
		t.took = took
		if t.heldBack(l) {
			l.errs[i] = errHeldBack // an earlier message of its key did not end done
			t.attempt--
			t.attemptShown.Store(int32(t.attempt))
		} else if l.errs[i] = p.outcome(spans[i].ctx, t, l.errs[i]); l.errs[i] != nil {
			t.holdKey(l)
		}
		p.tracing.End(spans[i].span, l.errs[i])
	}
	p.tracing.End(span, err)
}

// msgSpan is a message's span in a batch, and its context.
type msgSpan struct {
	ctx  context.Context
	span trace.Span
}

// errHeldBack is the result of a lot's message run after an earlier one of
// its key that did not end done: it is not counted, and runs again.
var errHeldBack = errors.New("kafkaworker: held back behind an earlier message of its key")

// outcome records a handled message's result as handle does, and for one
// that failed for good on this hop, publishes it onwards (forward): nil
// means done.
func (p *partition) outcome(ctx context.Context, t *task, err error) error {
	if err = p.noteOutcome(t, err); err == nil || t.forwarding() == nil {
		return err
	}
	t.fail.traceCtx = ctx
	return p.forward(t)
}

// callBatch runs the batch handler, a panic turned into an error.
func (p *partition) callBatch(ctx context.Context, l *lot) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &handler.PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	if n := maxAttempt(l.ran); n > 1 {
		ctx = retry.WithAttempt(ctx, n)
	}
	return p.batch.Handler.HandleBatch(ctx, l.msgs)
}

// maxAttempt is the highest delivery count among ts, what retry.Attempt
// tells a batch handler.
func maxAttempt(ts []*task) int {
	n := 0
	for _, t := range ts {
		n = max(n, t.base+t.attempt)
	}
	return n
}

// resultsOf spreads HandleBatch's error over its n messages. A nil
// *BatchError found in a non-nil error fails them all with
// handler.ErrNilBatchError (never a panic: this runs outside callBatch's
// recover).
func resultsOf(err error, n int) []error {
	errs := make([]error, n)
	var be *handler.BatchError
	switch {
	case err == nil:
	case errors.As(err, &be) && be == nil:
		err = handler.ErrNilBatchError
		for i := range errs {
			errs[i] = err
		}
	case errors.As(err, &be) && len(be.Errs) == n:
		copy(errs, be.Errs)
	case errors.As(err, &be):
		err = &handler.BatchLengthError{Results: len(be.Errs), Messages: n}
		fallthrough
	default:
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

// batchOutcome is the outcome of a batch whose HandleBatch returned err,
// spread over its messages as errs.
func batchOutcome(err error, errs []error) metricdef.BatchResult {
	if err == nil {
		return metricdef.BatchSuccess
	}
	for _, e := range errs {
		if e == nil {
			return metricdef.BatchPartial
		}
	}
	return metricdef.BatchFailed
}

// settleInLot finishes one ran task of a lot as run finishes a single
// delivery, and returns the lots its key's next message cut. Called with
// p.mu held.
func (p *partition) settleInLot(l *lot, t *task, err error, state partState) []*lot {
	if err == errHeldBack {
		return nil // it waits in its key's FIFO behind the one that did not end done
	}
	p.record(t)
	var next *task
	idle := false
	switch {
	case state == partFenced:
	case err == nil:
		next, idle = p.complete(t)
	case state == partRunning:
		p.scheduleRetry(t, err)
	}
	p.settle(err != nil, idle)
	p.leaveTxn(t, state != partFenced)
	if next == nil || next.lot == l || state != partRunning {
		return nil // in this lot: settled in its turn
	}
	return p.gather(next)
}

// releaseKeys forgets that l held back its keys (holdKey), once it is
// settled and scheduled: the keys' held-back messages run in later lots,
// and the key's state would otherwise keep l, its messages and the
// handler's errors alive until the key is held back again or swept. Called
// with p.mu held, by the goroutine that ran l, before any later lot of its
// keys can start.
func releaseKeys(l *lot) {
	for _, t := range l.tasks {
		if ks := t.key; ks != nil && ks.heldIn == l {
			ks.heldIn = nil
		}
	}
}

// dropLot unlinks the lot from its tasks. Called with p.mu held.
func (p *partition) dropLot(l *lot) {
	for _, t := range l.tasks {
		if t.lot == l {
			t.lot = nil
		}
	}
}
