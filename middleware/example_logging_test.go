package middleware_test

import (
	"context"
	"errors"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// A failure is logged at Warn with its error type; the key and value are not
// logged.
func ExampleLogging() {
	h := middleware.Logging(exampleLogger())(handler.HandlerFunc(
		func(context.Context, *handler.Message) error {
			return errors.New("stock service unavailable")
		}))

	_ = h.Handle(context.Background(), &handler.Message{
		Topic: "orders", Partition: 2, Offset: 7,
		Key: []byte("customer-17"), Value: []byte(`{"card":"4111..."}`),
	})
	// Output:
	// level=WARN msg="message failed" messaging.destination.name=orders messaging.destination.partition.id=2 messaging.kafka.offset=7 error="stock service unavailable" error.type=error
}
