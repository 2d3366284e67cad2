package middleware

import (
	"context"
	"runtime/debug"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Recover turns a panic in the wrapped handler into a returned
// *handler.PanicError holding the panic value and the stack of the
// panicking goroutine, so handler.ErrorType reports "panic" and the message
// is retried like after any other error. The panic does not propagate.
//
// The value is kept as it was given to panic, even when it is an error:
// PanicError does not unwrap to it, so errors.Is(err, v) is false and a
// panic is never mistaken for the error it carries (panic(ctx.Err()) is
// still a "panic", not a "timeout"); read it from PanicError.Value.
// panic(nil) arrives as a *runtime.PanicNilError value. A handler that
// calls runtime.Goexit is not recovered.
//
// Errors returned normally pass through unchanged.
func Recover() Middleware {
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, msg *handler.Message) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = &handler.PanicError{Value: v, Stack: debug.Stack()}
				}
			}()
			return next.Handle(ctx, msg)
		})
	}
}
