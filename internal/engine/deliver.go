package engine

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// clockAnchor is the time origin of delivery timing: durations are read
// from the monotonic clock relative to it, and wall-clock instants derived
// from it are exact to the millisecond that Kafka timestamps carry.
var clockAnchor = time.Now()

// clockAnchorUnix is clockAnchor in Unix nanoseconds: a wall-clock instant
// from the coarse clock is clockAnchorUnix plus its reading, in integers.
var clockAnchorUnix = clockAnchor.UnixNano()

// This file holds what happens to one message once it runs: the delivery
// to the handler, its outcome in the metrics, the retry in place and the
// forwarding to a retry or dead-letter topic.

// notDue reports whether t came from a retry tier before its due time; if
// so it schedules t for then. Waiting holds no goroutine.
func (p *partition) notDue(t *task) bool {
	if t.notBefore.IsZero() {
		return false
	}
	wait := time.Until(t.notBefore)
	if wait <= 0 {
		t.notBefore = time.Time{}
		return false
	}
	p.mu.Lock()
	if p.loadState() == partRunning {
		p.backingOff[t] = time.AfterFunc(wait, func() { p.retryDue(t) })
	}
	p.mu.Unlock()
	return true
}

// deliver hands t to the handler, and when it fails for good on this hop,
// publishes it to the next retry tier or the dead-letter topic. nil means
// the message is done: handled, or forwarded and acknowledged.
func (p *partition) deliver(t *task) error {
	if t.emitting { // handled already; only its output waits to be sent
		return p.emit(t.fail.traceCtx, t)
	}
	if t.forwarding() == nil {
		out := p.outputOf(t)
		out.Begin()
		ctx, span := p.tracing.Start(out, &t.msg, p.spanAttrs)
		err := p.handle(ctx, t)
		switch produced := len(out.End()) > 0; {
		case err != nil:
			out.Reset() // a failed delivery's output is never sent
		case produced && p.txn != nil:
			err = p.putOutputInTxn(ctx, t)
		case produced:
			err = p.emit(ctx, t)
		}
		if err == nil || t.forwarding() == nil {
			p.tracing.End(span, err)
			return err
		}
		t.fail.traceCtx = ctx // the retry or dead-letter record continues this trace
		defer p.tracing.End(span, err)
	}
	return p.forward(t)
}

// handle runs one delivery of t through the handler and records its
// outcome. When the message failed for good on this hop it sets where it
// goes next (t.forwarding).
func (p *partition) handle(ctx context.Context, t *task) error {
	t.attempt++
	t.attemptShown.Store(int32(t.attempt))
	began := p.clock.read()
	if t.attempt == 1 {
		t.delay, t.hasDelay = messageDelay(began, t.msg.Timestamp)
	}
	err := p.call(ctx, t)
	t.took = p.clock.read() - began
	return p.noteOutcome(t, err)
}

// noteOutcome records a delivery's result, err, for the metrics and the
// status page and, when the message failed for good on this hop, sets
// where it goes next (t.forwarding). It returns err.
func (p *partition) noteOutcome(t *task, err error) error {
	if err == nil {
		t.note(metricdef.Success)
		return nil
	}
	if p.loadState() != partRunning {
		return err // given up by the worker, not a failure of the message
	}
	now := time.Now()
	dest := p.fwd.Next(p.hop, t.attempt, err, now)
	p.all.NoteFailure(failureOf(p, t, err, dest, now)) // the status page's failure list (status_sample.go)
	if dest == nil {
		t.note(metricdef.Error)
		return err // retry in place
	}
	f := t.failed()
	f.dest, f.err, f.at = dest, err, now
	return err
}

// forward publishes t where it failed to; nil once the broker acknowledged
// (or, exactly-once, once it is in the open transaction).
func (p *partition) forward(t *task) error {
	if p.txn != nil {
		return p.forwardInTxn(t)
	}
	f := t.fail
	partition, offset, err := p.fwd.Publish(f.traceCtx, &t.msg, p.hop, t.base+t.attempt, f.err, f.dest, f.at)
	if err == nil && p.tierWatch != nil && !f.dest.DeadLetter {
		p.tierWatch.Forwarded(f.dest.Topic, partition, offset) // its tier partition, if idle here, is fetched again now
	}
	if err != nil {
		reason := forward.ErrorReason(err)
		p.all.ForwardError(f.dest.Topic, reason)
		attrs := p.msgAttrs(t, slog.String("destination", f.dest.Topic), slog.String("reason", reason), slog.Any("error", err))
		if fix := forward.ErrorFix(err); fix != "" {
			attrs = append(attrs, slog.String("fix", fix))
		}
		p.log.Error("forwarding a failed message failed; its offset stays uncommitted and the publish is retried", attrs...)
		return err
	}
	p.noteForwarded(t)
	return nil
}

// noteForwarded records and logs that t went to its retry tier or the
// dead-letter topic (or, exactly-once, into the open transaction for it:
// extra says so).
func (p *partition) noteForwarded(t *task, extra ...any) {
	f := t.fail
	level, what := slog.LevelWarn, "message sent to a retry topic"
	t.note(metricdef.Retry)
	if f.dest.DeadLetter {
		level, what = slog.LevelError, "message dead-lettered"
		t.note(metricdef.DeadLetter)
	}
	attrs := p.msgAttrs(t, slog.String("destination", f.dest.Topic), slog.Int("attempt", t.base+t.attempt), slog.Any("error", f.err))
	p.log.Log(p.ctx, level, what, append(attrs, extra...)...)
}

// statsBatch is how many deliveries a partition records before it adds
// them to its stats even while busy (see flushStats).
const statsBatch = 64

// record adds t's last delivery, if noted and not yet recorded, to the
// partition's pending metrics. Called by the goroutine that ran the
// delivery, with p.mu held.
func (p *partition) record(t *task) {
	if !t.noted || p.stats == nil {
		t.noted = false
		return
	}
	t.noted = false
	p.pending.Record(t.outcome, t.took, t.delay, t.hasDelay)
	t.hasDelay = false
}

// flushStats adds the pending deliveries to p's stats, taking their lock
// once for all of them (see settle for when). Called with p.mu held.
func (p *partition) flushStats() { p.stats.Add(&p.pending) }

// msgAttrs are the log attributes naming t's message, then extra.
func (p *partition) msgAttrs(t *task, extra ...any) []any {
	return append([]any{
		attr.Topic(p.topic),
		attr.Partition(p.id),
		attr.Offset(t.msg.Offset),
	}, extra...)
}

// scheduleRetry retries t in place after an exponential backoff with
// jitter. Its key's later messages stay queued behind it; nothing else
// waits. Called with p.mu held.
func (p *partition) scheduleRetry(t *task, err error) {
	f := t.failed()
	if f.backoff == nil {
		f.backoff = backoff.WithContext(p.retry(), p.ctx)
	}
	d := f.backoff.NextBackOff()
	if d == backoff.Stop {
		return // the claim is going away; the message stays uncommitted
	}
	var ee *emitError
	switch {
	case t.emitting:
		p.log.Error("sending the handler's output failed; its offset stays uncommitted and the send is retried (the handler is not run again)",
			p.msgAttrs(t, slog.Duration("backoff", d), slog.Any("error", err))...)
	case errors.As(err, &ee): // exactly-once: refused before the transaction (putOutputInTxn)
		p.log.Error("the handler's output cannot be sent; its offset stays uncommitted and the delivery is retried (the handler runs again)",
			p.msgAttrs(t, slog.Duration("backoff", d), slog.Any("error", err))...)
	case f.dest == nil: // a failed publish was logged by deliver
		attrs := p.msgAttrs(t, slog.Int("attempt", t.base+t.attempt), slog.Duration("backoff", d),
			attr.ErrorType(handler.ErrorType(err)), slog.Any("error", err))
		var pe *handler.PanicError
		if errors.As(err, &pe) {
			attrs = append(attrs, slog.String("stack", string(pe.Stack)))
		}
		p.log.Warn("handler failed; retrying in place", attrs...)
	}
	p.backingOff[t] = time.AfterFunc(d, func() { p.retryDue(t) })
}

// retryDue hands t back to the pool when its backoff or due time is over,
// unless the partition stopped meanwhile.
func (p *partition) retryDue(t *task) {
	p.mu.Lock()
	_, pending := p.backingOff[t]
	delete(p.backingOff, t)
	ok := pending && p.loadState() == partRunning
	var lots []*lot
	if ok && p.batch != nil && t.forwarding() == nil { // it needs the batch handler
		lots, ok = p.gather(t), false
	}
	p.mu.Unlock()
	p.pushLots(lots)
	if ok {
		p.pool.push(t)
	}
}

// maxTimestampMs bounds the Kafka timestamps (milliseconds) whose delay is
// measured: beyond it (about the years 1678 and 2262) nanoseconds overflow.
const maxTimestampMs = math.MaxInt64 / int64(time.Millisecond)

// messageDelay is the processing delay of a message with timestamp ts whose
// first delivery began at began (coarse clock), in integer arithmetic: the
// wall clock at began less the timestamp. A timestamp ahead of this
// machine's clock (the producer's clock runs ahead) counts as no delay;
// ok is false for no timestamp or one too far out to be real (garbage), which
// is not measured.
func messageDelay(began time.Duration, ts time.Time) (d time.Duration, ok bool) {
	if ts.IsZero() {
		return 0, false
	}
	ms := ts.UnixMilli()
	if ms > maxTimestampMs || ms < -maxTimestampMs {
		return 0, false
	}
	d = time.Duration(clockAnchorUnix + int64(began) - ms*int64(time.Millisecond) - int64(ts.Nanosecond()%int(time.Millisecond)))
	return max(d, 0), true
}

// note marks the delivery's outcome for record.
func (t *task) note(r metricdef.Result) { t.outcome, t.noted = r, true }

// failure is what a task carries once it has failed; allocated on the first
// failure only, so the task every message needs stays small.
type failure struct {
	backoff  backoff.BackOff
	dest     *forward.Destination // set once the message failed for good on this hop
	err      error                // the failure that sent it there
	at       time.Time            // when
	traceCtx context.Context      // the failed delivery's span, continued by the forwarded record
}

func (t *task) failed() *failure {
	if t.fail == nil {
		t.fail = &failure{}
	}
	return t.fail
}

// forwarding returns where t is being published, or nil.
func (t *task) forwarding() *forward.Destination {
	if t.fail == nil {
		return nil
	}
	return t.fail.dest
}
