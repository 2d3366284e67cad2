package handler

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestHandlerFuncCallsTheFunction(t *testing.T) {
	t.Parallel()
	want := errors.New("boom")
	var got *Message
	h := HandlerFunc(func(_ context.Context, m *Message) error { got = m; return want })
	m := &Message{Topic: "t", Offset: 7}
	if err := h.Handle(context.Background(), m); err != want || got != m {
		t.Fatalf("HandlerFunc.Handle returned %v and passed %v", err, got)
	}
}

func TestMessageHeaderLastWins(t *testing.T) {
	t.Parallel()
	m := &Message{Headers: []Header{{"a", []byte("1")}, {"b", []byte("2")}, {"a", []byte("3")}}}
	if v, ok := m.Header("a"); !ok || string(v) != "3" {
		t.Fatalf("Header(a) = %q, %v; want the last one, 3", v, ok)
	}
	if _, ok := m.Header("missing"); ok {
		t.Fatal("Header(missing) reported present")
	}
}

type myErr struct{}

func (myErr) Error() string { return "mine" }

func TestErrorType(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("x"), "error"},
		{&PanicError{Value: "boom"}, "panic"},
		{fmt.Errorf("ctx: %w", &PanicError{Value: 1}), "panic"},
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{myErr{}, "handler.myErr"},
		{fmt.Errorf("wrapped: %w", myErr{}), "handler.myErr"},
	} {
		if got := ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// marked is an application's own Transparent wrapper.
type marked struct{ err error }

func (m marked) Error() string { return "marked: " + m.err.Error() }
func (m marked) Unwrap() error { return m.err }
func (marked) Transparent()    {}

// ErrorType looks through a Transparent wrapper (retry.PermanentError is
// one, tested in package retry) but not through other wrapping types.
func TestErrorTypeLooksThroughTransparent(t *testing.T) {
	t.Parallel()
	if got := ErrorType(marked{myErr{}}); got != "handler.myErr" {
		t.Errorf("ErrorType(marked{myErr}) = %q, want the wrapped type", got)
	}
	if got := ErrorType(fmt.Errorf("a: %w", marked{fmt.Errorf("b: %w", myErr{})})); got != "handler.myErr" {
		t.Errorf("nested fmt and Transparent wrappers: %q, want handler.myErr", got)
	}
	if got := ErrorType(opaque{myErr{}}); got != "handler.opaque" {
		t.Errorf("a wrapper that is not Transparent names itself; got %q", got)
	}
	if got := ErrorType(fmt.Errorf("%w and %w", myErr{}, errors.New("x"))); got != "*fmt.wrapErrors" {
		t.Errorf("a multi-%%w error: %q, want *fmt.wrapErrors as before", got)
	}
}

// opaque wraps without being Transparent: a class of its own.
type opaque struct{ err error }

func (o opaque) Error() string { return "opaque: " + o.err.Error() }
func (o opaque) Unwrap() error { return o.err }
