// Package middleware holds optional wrappers for a handler.Handler, in the
// shape net/http uses: a Middleware takes the next Handler and returns one
// that does something before and after calling it.
//
//	h := middleware.Chain(
//		middleware.Logging(logger),
//		middleware.Recover(),
//		middleware.Timeout(5*time.Second),
//	)(myHandler)
//
// Chain applies its arguments so that the first is the outermost: a message
// enters Logging, then Recover, then Timeout, then myHandler, and the result
// travels back the other way. Put a middleware outside another to let it see
// what the inner one does: Logging outside Recover logs a panic as a failure
// with error.type=panic; Logging outside Timeout times the whole attempt.
//
// The worker installs a chain with worker.WithMiddleware(m...), which wraps
// the handler given to worker.New; the wrapped handler is called once per
// attempt, so a retried message passes through the chain again. The worker
// already recovers panics, records metrics and traces, and logs every
// failure it retries, so nothing here is needed for its guarantees: these
// middlewares are building blocks for the user's own chain, and useful on
// their own in a handler's unit tests.
//
// Every middleware returns the error of the handler it wraps, or one that
// handler.ErrorType classifies (a recovered panic is a *handler.PanicError),
// so an error keeps meaning "retry this message" through the chain.
package middleware
