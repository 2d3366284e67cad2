package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// secretMsg carries payload bytes that must never reach a log line.
func secretMsg() *handler.Message {
	return &handler.Message{
		Topic: "orders", Partition: 3, Offset: 42,
		Key: []byte("KEY-SECRET"), Value: []byte("VALUE-SECRET"),
		Headers:   []handler.Header{{Key: "HDR-SECRET", Value: []byte("HDRVAL-SECRET")}},
		Timestamp: time.Unix(1, 0),
	}
}

func TestLoggingFailureAtWarn(t *testing.T) {
	t.Parallel()
	rec := &testutil.Logs{}
	want := fmt.Errorf("calling billing: %w", context.DeadlineExceeded)
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return want })
	err := middleware.Logging(rec.Logger())(h).Handle(context.Background(), secretMsg())
	if err != want {
		t.Fatalf("Logging returned %v, want the handler's error unchanged", err)
	}
	if len(rec.Records()) != 1 {
		t.Fatalf("got %d log lines, want exactly 1", len(rec.Records()))
	}
	r := rec.Records()[0]
	if r.Level != slog.LevelWarn {
		t.Errorf("level = %v, want WARN", r.Level)
	}
	a := testutil.Attrs(r)
	for key, exp := range map[string]any{
		"messaging.destination.name":         "orders",
		"messaging.destination.partition.id": int64(3),
		"messaging.kafka.offset":             int64(42),
		"error.type":                         "timeout",
		"error":                              want,
	} {
		if got, ok := a[key]; !ok || got.Any() != exp {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, exp)
		}
	}
	if d, ok := a["duration"]; !ok || d.Kind() != slog.KindDuration || d.Duration() < 0 {
		t.Errorf("duration = %v (present %v), want a non-negative duration", d, ok)
	}
	if len(a) != 6 {
		t.Errorf("attributes %v, want exactly the six documented ones", a)
	}
}

func TestLoggingSuccessAtDebugOnly(t *testing.T) {
	t.Parallel()
	rec := &testutil.Logs{}
	ok := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	if err := middleware.Logging(rec.Logger())(ok).Handle(context.Background(), secretMsg()); err != nil {
		t.Fatalf("Logging returned %v for a successful handler", err)
	}
	if len(rec.Records()) != 1 || rec.Records()[0].Level != slog.LevelDebug {
		t.Fatalf("got %v, want exactly one DEBUG line", rec.Records())
	}
	a := testutil.Attrs(rec.Records()[0])
	if _, has := a["error"]; has || a["messaging.kafka.offset"].Int64() != 42 {
		t.Errorf("success line attributes %v, want offset 42 and no error", a)
	}

	// At the default Info level, success writes nothing.
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	_ = middleware.Logging(l)(ok).Handle(context.Background(), secretMsg())
	if buf.Len() != 0 {
		t.Errorf("success logged at Info level: %q", buf.String())
	}
}

func TestLoggingNeverLogsPayloads(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, ret := range []error{nil, errors.New("failed")} {
		h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return ret })
		_ = middleware.Logging(l)(h).Handle(context.Background(), secretMsg())
	}
	out := buf.String()
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "level=WARN") {
		t.Fatalf("want one DEBUG and one WARN line, got:\n%s", out)
	}
	if strings.Contains(out, "SECRET") {
		t.Fatalf("a key, value or header reached the log:\n%s", out)
	}
}

func TestLoggingNilLoggerUsesDefault(t *testing.T) {
	t.Parallel()
	// slog.Default() is global; only check that nil is accepted and the
	// result passes through (success logs at Debug, below the default level).
	ok := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	if err := middleware.Logging(nil)(ok).Handle(context.Background(), secretMsg()); err != nil {
		t.Fatal(err)
	}
}
