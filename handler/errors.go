package handler

import (
	"context"
	"errors"
	"fmt"
	"reflect"
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

// ErrorType classifies err into a short, low-cardinality name for metrics
// labels, span attributes and the kw-error-type header: "panic" for a
// recovered panic, "timeout" for a deadline exceeded, "canceled" for a
// cancelled context, and otherwise the Go type of the innermost error that
// is not a plain wrapper (e.g. "*net.OpError"), or "error" for errors.New.
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
	t := reflect.TypeOf(err).String()
	if t == "*errors.errorString" {
		return "error"
	}
	return t
}

// isWrapper reports whether err only adds context or a disposition to the
// error it wraps (fmt.Errorf's %w, retry.Permanent), so the wrapped error
// names the class better.
func isWrapper(err error) bool {
	switch reflect.TypeOf(err).String() {
	case "*fmt.wrapError", "*fmt.wrapErrors", "*retry.permanentError":
		return true
	}
	return false
}
