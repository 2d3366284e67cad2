package engine

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// This file holds the exactly-once path (WORKER_EXACTLY_ONCE; p.txn not
// nil): a delivery's output and its forwards go into the worker's open
// transaction instead of being sent and acknowledged one by one, and the
// message is finished in the commit state before the delivery leaves the
// transaction (run), so the transaction that holds its records also holds
// its offset. A partition claimed under an epoch whose transaction aborted
// is given up without a final commit (the dispatcher watches p.aborted),
// and its messages are handled again from the last committed offsets.

// errTxnAborted is a delivery's error when its partition's transaction
// epoch ended: nothing of it is kept.
var errTxnAborted = errors.New("kafkaworker: the partition's transaction aborted; the message is handled again from the last committed offset")

// putOutputInTxn puts t's output in the open transaction; on success t is
// inside it (t.inTxn) until run finishes it.
// Output that could never be sent (txn.Check) is refused before: it fails
// this delivery, which is retried (the handler runs again: its records
// are not kept, as they would not be after an abort), instead of aborting
// the transaction with every partition's work.
//
// The refused delivery counts as a failure (its handler's success was
// noted), in the metrics and on the status page's failure list, so that
// each retry, which runs the handler again, does not count a success.
func (p *partition) putOutputInTxn(ctx context.Context, t *task) error {
	recs := t.out.End()
	msgs, err := p.txn.Prepare(recs, func(h *[]sarama.RecordHeader) { p.tracing.Inject(ctx, h) })
	if err != nil {
		t.out.Reset()
		err = &emitError{Records: len(recs), Err: err}
		t.note(metricdef.Error)
		p.all.NoteFailure(failureOf(p, t, err, nil, time.Now()))
		return err
	}
	if !p.txn.Enter(p.epoch) {
		t.out.Reset()
		return errTxnAborted
	}
	t.inTxn = true
	p.txn.Send(msgs...)
	t.out.Reset()
	return nil
}

// forwardInTxn puts t's retry or dead-letter record in the open
// transaction; see putOutputInTxn.
func (p *partition) forwardInTxn(t *task) error {
	f := t.fail
	if !p.txn.Enter(p.epoch) {
		return errTxnAborted
	}
	t.inTxn = true
	p.txn.Send(p.fwd.Record(f.traceCtx, &t.msg, p.hop, t.base+t.attempt, f.err, f.dest, f.at))
	p.noteForwarded(t, slog.Bool("in_transaction", true))
	return nil
}

// leaveTxn ends t's stay in the transaction, once its completion is in the
// commit state (or, if its partition was fenced meanwhile, after dooming
// the transaction: its records must not commit without its offset).
// Called with p.mu held.
func (p *partition) leaveTxn(t *task, completed bool) {
	if !t.inTxn {
		return
	}
	t.inTxn = false
	if completed {
		p.flushFinished()
	} else {
		p.txn.Doom()
	}
	p.txn.Leave()
}
