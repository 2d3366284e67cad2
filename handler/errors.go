package handler

import (
	"context"
	"errors"
	"fmt"
)

// PanicError is what a handler's panic becomes once recovered (by the worker
// or by middleware.Recover): an ordinary error, retried like any other, with
// the panic value and the goroutine's stack kept for logs.
type PanicError struct {
	Value any
	Stack []byte
}

// Error describes the panic; the stack stays in Stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("handler panicked: %v", e.Value)
}

// Transparent is implemented by an error that only says how the error it
// wraps is to be treated, without being a failure class of its own:
// ErrorType looks through it. retry.PermanentError is one; an application
// may mark its own such wrappers the same way.
type Transparent interface {
	error
	Unwrap() error
	// Transparent marks the type; it is never called.
	Transparent()
}

// The Go types of the errors fmt.Errorf and errors.New make, read from
// samples rather than spelled out, so ErrorType recognises them without
// naming unexported types.
var (
	fmtWrapType   = fmt.Sprintf("%T", fmt.Errorf("%w", errors.ErrUnsupported))
	fmtWrapsType  = fmt.Sprintf("%T", fmt.Errorf("%w %w", errors.ErrUnsupported, errors.ErrUnsupported))
	errorsNewType = fmt.Sprintf("%T", errors.New(""))
)

// ErrorType classifies err into a short, low-cardinality name for metrics
// labels, span attributes and the kw-error-type header: "panic" for a
// recovered panic, "timeout" for a deadline exceeded, "canceled" for a
// cancelled context, and otherwise the Go type of the innermost error that
// is not a plain wrapper (fmt.Errorf's %w, or a Transparent error such as
// retry.PermanentError), e.g. "*net.OpError", or "error" for errors.New.
func ErrorType(err error) string {
	var pe *PanicError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pe):
		return "panic"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	for {
		next := errors.Unwrap(err)
		if next == nil || !isWrapper(err) {
			break
		}
		err = next
	}
	t := fmt.Sprintf("%T", err)
	if t == errorsNewType {
		return "error"
	}
	return t
}

// isWrapper reports whether err only adds context or a disposition to the
// error it wraps (fmt.Errorf's %w, a Transparent error), so the wrapped
// error names the class better.
func isWrapper(err error) bool {
	if _, ok := err.(Transparent); ok {
		return true
	}
	t := fmt.Sprintf("%T", err)
	return t == fmtWrapType || t == fmtWrapsType
}
