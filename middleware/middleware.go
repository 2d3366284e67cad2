package middleware

import "github.com/kafkaworker/kafkaworker/handler"

// Middleware wraps a Handler: the Handler it returns usually does some work,
// calls next, and does some more with next's result. A Middleware must
// return a Handler that is safe for concurrent use, as Handler requires.
type Middleware func(next handler.Handler) handler.Handler

// Chain combines middlewares into one, the first being the outermost:
// Chain(a, b)(h) is a(b(h)), so a message reaches a first and h last, and
// h's result passes through b before a. Nil entries are skipped, and Chain()
// with none left returns its handler unchanged. Chain keeps its own copy of
// m, so changing the slice afterwards has no effect.
func Chain(m ...Middleware) Middleware {
	ms := make([]Middleware, 0, len(m))
	for _, mw := range m {
		if mw != nil {
			ms = append(ms, mw)
		}
	}
	return func(h handler.Handler) handler.Handler {
		for i := len(ms) - 1; i >= 0; i-- {
			h = ms[i](h)
		}
		return h
	}
}
