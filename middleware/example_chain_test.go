package middleware_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// exampleLogger writes text lines to stdout without the time and duration,
// which change from run to run.
func exampleLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == "duration") {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// Logging is outermost so that it sees a panic, once Recover has turned it
// into an error, and times the whole attempt.
func ExampleChain() {
	chain := middleware.Chain(
		middleware.Logging(exampleLogger()),
		middleware.Recover(),
		middleware.Timeout(5*time.Second),
	)
	h := chain(handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Value) == "poison" {
			panic("cannot parse order")
		}
		return nil
	}))

	ctx := context.Background()
	_ = h.Handle(ctx, &handler.Message{Topic: "orders", Partition: 0, Offset: 41, Value: []byte("ok")})
	err := h.Handle(ctx, &handler.Message{Topic: "orders", Partition: 0, Offset: 42, Value: []byte("poison")})
	fmt.Println("returned:", handler.ErrorType(err))
	// Output:
	// level=DEBUG msg="message handled" messaging.destination.name=orders messaging.destination.partition.id=0 messaging.kafka.offset=41
	// level=WARN msg="message failed" messaging.destination.name=orders messaging.destination.partition.id=0 messaging.kafka.offset=42 error="handler panicked: cannot parse order" error.type=panic
	// returned: panic
}
