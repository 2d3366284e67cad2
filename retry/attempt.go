package retry

import "context"

type attemptKey struct{}

// Attempt returns which delivery of the current message this is: 1 for the
// first, counting every delivery since the message was first consumed,
// including those before it came back from a retry topic. Outside a
// handler it returns 1.
func Attempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(int); ok && n > 0 {
		return n
	}
	return 1
}

// WithAttempt returns ctx carrying attempt n, as the worker passes it to a
// handler. Tests of handlers use it to simulate a redelivery.
func WithAttempt(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, attemptKey{}, n)
}
