package handler

import (
	"context"
	"errors"
	"fmt"
)

// BatchHandler processes several messages of one partition at once: a bulk
// write to a database, one request to a service for many records.
//
// msgs is in offset order and may hold several messages of one key (in
// their offset order); a key's messages are never in two batches at once,
// so the key order a Handler gets holds for batches too. Returning nil
// means every message is done. A *BatchError (see BatchResult) gives one
// result per message: those with a nil result are done, each failed one is
// retried in place, sent to a retry tier or dead-lettered on its own, as a
// Handler's failure would be. Any other error (or a panic) fails every
// message of the batch.
//
// A failed message holds back the later messages of its key in the batch:
// whatever their results, they are delivered again after it, so a key's
// messages are done in offset order. (A failed message that goes to a retry
// tier or the dead-letter topic frees its key at once, as it does for a
// Handler: the later ones' results stand.)
//
// ctx is cancelled when the worker gives up the batch (shutdown deadline or
// partition revoked). The worker owns msgs and the Messages until
// HandleBatch returns. HandleBatch is called concurrently for different
// batches and must be safe for concurrent use.
type BatchHandler interface {
	HandleBatch(ctx context.Context, msgs []*Message) error
}

// BatchHandlerFunc adapts an ordinary function to the BatchHandler
// interface.
type BatchHandlerFunc func(ctx context.Context, msgs []*Message) error

// HandleBatch calls f(ctx, msgs).
func (f BatchHandlerFunc) HandleBatch(ctx context.Context, msgs []*Message) error {
	return f(ctx, msgs)
}

// BatchError is HandleBatch's result when only some messages of the batch
// failed: Errs[i] is the result of msgs[i], nil for done. Errs must have one
// entry per message of the batch; a BatchError of another length fails the
// whole batch with a *BatchLengthError.
type BatchError struct {
	Errs []error
}

// BatchResult returns nil when every entry of errs is nil, and a
// *BatchError holding errs otherwise: a BatchHandler that fills one result
// per message returns BatchResult(errs).
func BatchResult(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return &BatchError{Errs: errs}
		}
	}
	return nil
}

// Error counts the failures and names the first. A nil *BatchError (a
// typed nil returned as an error) says so rather than panic.
func (e *BatchError) Error() string {
	if e == nil {
		return ErrNilBatchError.Error()
	}
	failed, first := 0, -1
	for i, err := range e.Errs {
		if err != nil {
			failed++
			if first < 0 {
				first = i
			}
		}
	}
	if first < 0 {
		return fmt.Sprintf("batch of %d messages: none failed", len(e.Errs))
	}
	return fmt.Sprintf("batch of %d messages: %d failed, the first (msgs[%d]): %v", len(e.Errs), failed, first, e.Errs[first])
}

// Unwrap returns the failures, so errors.Is and errors.As look into them.
func (e *BatchError) Unwrap() []error {
	if e == nil {
		return nil
	}
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ErrNilBatchError is the error of every message of a batch whose handler
// returned a nil *BatchError as a non-nil error (a typed nil: var be
// *BatchError; ...; return be). As with a Handler, a non-nil error is a
// failure, so the whole batch is retried; the fix is to return nil, e.g.
// BatchResult(errs), when every message is done.
var ErrNilBatchError = errors.New("HandleBatch returned a nil *BatchError as a non-nil error (a typed nil), which counts as a failure of the whole batch: " +
	"return nil when every message is done, e.g. return BatchResult(errs) rather than a *BatchError variable")

// BatchLengthError is the error of every message of a batch whose handler
// returned a *BatchError with a result count other than the batch's
// length: the results cannot be matched to the messages, so the whole
// batch is retried.
type BatchLengthError struct {
	Results  int // len(BatchError.Errs)
	Messages int // len(msgs)
}

func (e *BatchLengthError) Error() string {
	return fmt.Sprintf("HandleBatch returned a *BatchError with %d results for a batch of %d messages: give exactly one result per message (nil for done), e.g. with BatchResult(errs) where errs := make([]error, len(msgs))",
		e.Results, e.Messages)
}
