// Package testutil holds the helpers the module's tests share: a log
// recorder, a goroutine-safe text buffer, and a wait on a condition with a
// deadline. It is imported by _test.go files only.
package testutil

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// verbose reports whether KW_TEST_LOG asks for a test's logs on stderr.
func verbose() bool { return os.Getenv("KW_TEST_LOG") != "" }

// Logs keeps every record logged through Logger, at every level, for
// assertions; with KW_TEST_LOG set they go to stderr as text too. The zero
// value is ready to use.
type Logs struct {
	mu sync.Mutex
	rs []slog.Record
}

// Logger returns a logger recording into l.
func (l *Logs) Logger() *slog.Logger {
	var next slog.Handler = slog.DiscardHandler
	if verbose() {
		next = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return slog.New(logsHandler{logs: l, next: next})
}

// Records returns every record so far, in logging order.
func (l *Logs) Records() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.rs)
}

func (l *Logs) add(r slog.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rs = append(l.rs, r.Clone())
}

// Find returns the records of the given level and message.
func (l *Logs) Find(level slog.Level, msg string) []slog.Record {
	var out []slog.Record
	for _, r := range l.Records() {
		if r.Level == level && r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

// logsHandler records into logs and passes on to next. A record keeps
// only its own attributes: those a logger was given With are next's.
type logsHandler struct {
	logs *Logs
	next slog.Handler
}

func (h logsHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h logsHandler) Handle(ctx context.Context, r slog.Record) error {
	h.logs.add(r)
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h logsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logsHandler{logs: h.logs, next: h.next.WithAttrs(as)}
}

func (h logsHandler) WithGroup(name string) slog.Handler {
	return logsHandler{logs: h.logs, next: h.next.WithGroup(name)}
}

// Attrs returns a record's attributes by key, resolved.
func Attrs(r slog.Record) map[string]slog.Value {
	m := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Resolve(); return true })
	return m
}

// Attr returns the value of a record's attribute key as text, or "".
func Attr(r slog.Record, key string) string {
	if v, ok := Attrs(r)[key]; ok {
		return v.String()
	}
	return ""
}

// Buffer is a bytes.Buffer safe to write from one goroutine (a worker's
// logger, a command's output) while a test reads it from another.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TextLogger returns a debug-level text logger writing into b (and to
// stderr with KW_TEST_LOG).
func (b *Buffer) TextLogger() *slog.Logger {
	var w io.Writer = b
	if verbose() {
		w = io.MultiWriter(b, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// PollInterval is how often WaitFor checks its condition: a polling
// interval, not synchronisation.
const PollInterval = 10 * time.Millisecond

// WaitFor checks cond every PollInterval until it holds, failing the test
// with what once timeout has passed.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(PollInterval)
	}
}
