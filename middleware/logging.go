package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Attribute keys of the lines Logging writes. The messaging and error keys
// are OpenTelemetry semantic-convention names, the same the worker's own
// log lines use, so the lines join up with traces and metrics.
const (
	keyTopic     = "messaging.destination.name"
	keyPartition = "messaging.destination.partition.id"
	keyOffset    = "messaging.kafka.offset"
	keyErrorType = "error.type"
	keyError     = "error"
	keyDuration  = "duration"
)

// Logging writes one line to l for each message the wrapped handler
// handles, with the message's topic, partition and offset and how long the
// handler took:
//
//   - on success, "message handled" at Debug level;
//   - on failure, "message failed" at Warn level, adding the error and its
//     class from handler.ErrorType ("timeout", "panic", ...).
//
// It never logs a message's key, value or headers: payloads may hold
// personal data or secrets, and logs are kept and shipped more widely than
// the topic. The line is written with the handler's ctx, so an
// slog.Handler can add trace ids from it. The handler's error is returned
// unchanged. A nil l means slog.Default(), read when Logging is called.
//
// A panic passes through Logging unlogged; put Recover inside Logging to log
// it as a failure.
func Logging(l *slog.Logger) Middleware {
	if l == nil {
		l = slog.Default()
	}
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, msg *handler.Message) error {
			start := time.Now()
			err := next.Handle(ctx, msg)
			logResult(ctx, l, msg, time.Since(start), err)
			return err
		})
	}
}

// logResult writes the line Logging promises for one handled message.
func logResult(ctx context.Context, l *slog.Logger, msg *handler.Message, took time.Duration, err error) {
	level, text := slog.LevelDebug, "message handled"
	if err != nil {
		level, text = slog.LevelWarn, "message failed"
	}
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String(keyTopic, msg.Topic),
		slog.Int(keyPartition, int(msg.Partition)),
		slog.Int64(keyOffset, msg.Offset),
		slog.Duration(keyDuration, took),
	}
	if err != nil {
		attrs = append(attrs, slog.Any(keyError, err), slog.String(keyErrorType, handler.ErrorType(err)))
	}
	l.LogAttrs(ctx, level, text, attrs...)
}
