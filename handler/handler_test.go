package handler

import (
	"context"
	"errors"
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
