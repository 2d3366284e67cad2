package middleware_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

func ExampleRecover() {
	h := middleware.Recover()(handler.HandlerFunc(func(context.Context, *handler.Message) error {
		var m map[string]int
		m["boom"]++ // assignment to entry in nil map
		return nil
	}))

	err := h.Handle(context.Background(), &handler.Message{Topic: "orders"})
	var pe *handler.PanicError
	fmt.Println(errors.As(err, &pe), handler.ErrorType(err), len(pe.Stack) > 0)
	fmt.Println(err)
	// Output:
	// true panic true
	// handler panicked: assignment to entry in nil map
}
