package middleware

import (
	"context"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Timeout gives the wrapped handler a context that expires d after the
// message reaches it (context.WithTimeout of the incoming context, so an
// earlier deadline or cancellation of the caller still applies).
//
// Timeout does not abandon the handler: it waits for it to return, however
// long that takes, and returns what it returned. A message must not count as
// done, or be retried, while its handler is still running: the next message
// of the same key would start beside it and break per-key order, and a retry
// would run concurrently with the first attempt. So the deadline is a
// request the handler honours by watching ctx. One that does returns
// (typically) an error wrapping context.DeadlineExceeded, which
// handler.ErrorType classifies as "timeout" and the worker retries. One that
// ignores ctx simply runs longer; if it then returns nil, the message
// finished and Timeout returns nil too. Whatever the handler returns is
// passed on unchanged.
//
// Timeout(d) with d <= 0 sets no deadline: it returns the handler it is
// given, so a duration read from configuration can turn it off with 0.
func Timeout(d time.Duration) Middleware {
	if d <= 0 {
		return func(next handler.Handler) handler.Handler { return next }
	}
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, msg *handler.Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next.Handle(ctx, msg)
		})
	}
}
