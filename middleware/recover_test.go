package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// panicking returns a handler that panics with v.
func panicking(v any) handler.Handler {
	return handler.HandlerFunc(func(context.Context, *handler.Message) error { panic(v) })
}

// recovered runs h under Recover and returns the *handler.PanicError it
// must have returned.
func recovered(t *testing.T, h handler.Handler) *handler.PanicError {
	t.Helper()
	err := middleware.Recover()(h).Handle(context.Background(), &handler.Message{})
	var pe *handler.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Recover returned %#v, want a *handler.PanicError", err)
	}
	if got := handler.ErrorType(err); got != "panic" {
		t.Errorf("ErrorType = %q, want panic", got)
	}
	return pe
}

func TestRecoverTurnsPanicIntoPanicError(t *testing.T) {
	t.Parallel()
	var at string // file:line of the panic
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error {
		_, file, line, _ := runtime.Caller(0)
		at = fmt.Sprintf("%s:%d", file, line+2)
		panic("boom")
	})
	pe := recovered(t, h)
	if pe.Value != "boom" {
		t.Errorf("Value = %#v, want \"boom\"", pe.Value)
	}
	// The stack is the panicking goroutine's, down to the panic itself.
	if !bytes.Contains(pe.Stack, []byte(at)) {
		t.Errorf("Stack does not show the panic at %s:\n%s", at, pe.Stack)
	}
}

func TestRecoverKeepsAnErrorValue(t *testing.T) {
	t.Parallel()
	cause := context.DeadlineExceeded
	pe := recovered(t, panicking(cause))
	if pe.Value != cause {
		t.Errorf("Value = %#v, want the error passed to panic", pe.Value)
	}
}

func TestRecoverPanicNil(t *testing.T) {
	t.Parallel()
	pe := recovered(t, panicking(nil))
	if _, ok := pe.Value.(*runtime.PanicNilError); !ok {
		t.Errorf("Value = %#v, want a *runtime.PanicNilError", pe.Value)
	}
}

func TestRecoverPassesResultsThrough(t *testing.T) {
	t.Parallel()
	want := errors.New("plain failure")
	for _, ret := range []error{nil, want} {
		h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return ret })
		if err := middleware.Recover()(h).Handle(context.Background(), &handler.Message{}); err != ret {
			t.Errorf("Recover returned %v, want the handler's %v unchanged", err, ret)
		}
	}
}
