package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// The handler honours its context, so it gives up when the deadline passes;
// the error says why, and the worker would retry the message.
func ExampleTimeout() {
	slow := handler.HandlerFunc(func(ctx context.Context, _ *handler.Message) error {
		select {
		case <-time.After(time.Hour): // a call that would take too long
			return nil
		case <-ctx.Done():
			return fmt.Errorf("calling billing: %w", ctx.Err())
		}
	})
	h := middleware.Timeout(10 * time.Millisecond)(slow)

	err := h.Handle(context.Background(), &handler.Message{Topic: "orders"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, context.DeadlineExceeded), handler.ErrorType(err))
	// Output:
	// calling billing: context deadline exceeded
	// true timeout
}
