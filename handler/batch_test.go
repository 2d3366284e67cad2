package handler

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestBatchResult(t *testing.T) {
	t.Parallel()
	if err := BatchResult(make([]error, 3)); err != nil {
		t.Fatalf("all nil: %v, want nil", err)
	}
	if err := BatchResult(nil); err != nil {
		t.Fatalf("empty: %v, want nil", err)
	}
	errs := []error{nil, io.ErrUnexpectedEOF, nil, context.DeadlineExceeded}
	err := BatchResult(errs)
	var be *BatchError
	if !errors.As(err, &be) || len(be.Errs) != 4 || be.Errs[1] != io.ErrUnexpectedEOF {
		t.Fatalf("BatchResult(%v) = %v, want a *BatchError holding errs", errs, err)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("errors.Is does not see the failures through a BatchError")
	}
	if got := err.Error(); !strings.Contains(got, "batch of 4 messages: 2 failed, the first (msgs[1]): unexpected EOF") {
		t.Fatalf("Error() = %q", got)
	}
}

func TestBatchLengthErrorNamesBothNumbers(t *testing.T) {
	t.Parallel()
	got := (&BatchLengthError{Results: 3, Messages: 5}).Error()
	if !strings.Contains(got, "3 results for a batch of 5 messages") || !strings.Contains(got, "BatchResult") {
		t.Fatalf("Error() = %q: want both numbers and the fix", got)
	}
}

// A typed nil *BatchError returned as an error is a mistake the worker
// reports, not one that panics in logging or errors.Is.
func TestNilBatchErrorSaysWhatIsWrong(t *testing.T) {
	t.Parallel()
	var be *BatchError
	var err error = be
	if got := err.Error(); got != ErrNilBatchError.Error() || !strings.Contains(got, "typed nil") || !strings.Contains(got, "return nil") {
		t.Fatalf("Error() = %q: want ErrNilBatchError's text, naming the mistake and the fix", got)
	}
	if errors.Is(err, io.EOF) {
		t.Fatal("errors.Is found io.EOF in a nil *BatchError")
	}
}

func TestBatchHandlerFunc(t *testing.T) {
	t.Parallel()
	var got int
	h := BatchHandlerFunc(func(_ context.Context, msgs []*Message) error { got = len(msgs); return nil })
	if err := h.HandleBatch(context.Background(), []*Message{{}, {}}); err != nil || got != 2 {
		t.Fatalf("HandleBatch: err %v, saw %d messages; want nil and 2", err, got)
	}
}
