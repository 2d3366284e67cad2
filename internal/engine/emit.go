package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// This file holds the sending of a handler's output (worker.Produce): the
// records a delivery produced are sent only once Handle returned nil, and
// the message is done only once the broker acknowledged them all. A send
// that fails is retried in place, with the message's backoff, without
// running the handler again; until then the message holds its key and its
// offset stays uncommitted, as a failed forward does.

// Emitter sends a delivery's output records; nil means the broker
// acknowledged every one of them. ctx carries the delivery's trace.
type Emitter interface {
	Emit(ctx context.Context, recs []outbox.Record) error
}

// errNoEmitter is the send error of output produced where nothing sends it.
var errNoEmitter = errors.New("kafkaworker: the handler produced output, but this worker has no producer for it")

// emitError is the error of a message whose handler succeeded but whose
// output could not be sent; the send is retried, the handler is not run
// again. (With exactly-once, output refused before it went into the
// transaction is not kept: the handler runs again; see putOutputInTxn.)
type emitError struct {
	Records int // how many records the delivery produced
	Err     error
}

func (e *emitError) Error() string {
	return fmt.Sprintf("kafkaworker: sending the handler's %d output records failed: %v", e.Records, e.Err)
}

func (e *emitError) Unwrap() error { return e.Err }

// outputOf returns t's outbox, made with the task (nextTask) under the
// partition's context, which it keeps for the task's life (see outbox).
func (p *partition) outputOf(t *task) *outbox.Delivery {
	if t.out == nil { // a task not made by nextTask (unit tests)
		t.out = outbox.New(p.ctx)
	}
	return t.out
}

// emit sends what t's successful delivery produced. On failure t keeps its
// records and is marked emitting, so that its next run sends them again;
// ctx (the delivery's trace) is kept for that run.
func (p *partition) emit(ctx context.Context, t *task) error {
	recs := t.out.End()
	err := errNoEmitter
	if p.outputs != nil {
		err = p.outputs.Emit(ctx, recs)
	}
	if err != nil {
		t.emitting = true
		t.failed().traceCtx = ctx
		return &emitError{Records: len(recs), Err: err}
	}
	t.emitting = false
	t.out.Reset()
	return nil
}
