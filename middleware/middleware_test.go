package middleware_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// trace records the order in which middlewares and the handler run.
type trace struct {
	mu     sync.Mutex
	events []string
}

func (tr *trace) add(e string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, e)
}

// named returns a middleware that records name+"-before" and name+"-after"
// around next.
func (tr *trace) named(name string) middleware.Middleware {
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
			tr.add(name + "-before")
			err := next.Handle(ctx, m)
			tr.add(name + "-after")
			return err
		})
	}
}

func (tr *trace) handler(err error) handler.Handler {
	return handler.HandlerFunc(func(context.Context, *handler.Message) error {
		tr.add("h")
		return err
	})
}

func TestChainFirstIsOutermost(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	want := errors.New("from h")
	h := middleware.Chain(tr.named("a"), nil, tr.named("b"), tr.named("c"))(tr.handler(want))
	if err := h.Handle(context.Background(), &handler.Message{}); err != want {
		t.Fatalf("Handle returned %v, want the handler's error %v", err, want)
	}
	order := []string{"a-before", "b-before", "c-before", "h", "c-after", "b-after", "a-after"}
	if !slices.Equal(tr.events, order) {
		t.Fatalf("order = %v, want %v", tr.events, order)
	}
}

func TestChainEqualsNesting(t *testing.T) {
	t.Parallel()
	chained, nested := &trace{}, &trace{}
	_ = middleware.Chain(chained.named("a"), chained.named("b"))(chained.handler(nil)).
		Handle(context.Background(), &handler.Message{})
	_ = nested.named("a")(nested.named("b")(nested.handler(nil))).
		Handle(context.Background(), &handler.Message{})
	if !slices.Equal(chained.events, nested.events) {
		t.Fatalf("Chain(a, b)(h) ran %v, a(b(h)) ran %v", chained.events, nested.events)
	}
}

func TestChainEmptyIsIdentity(t *testing.T) {
	t.Parallel()
	h := &struct{ handler.HandlerFunc }{} // comparable, unlike a HandlerFunc
	for name, m := range map[string]middleware.Middleware{
		"no args":   middleware.Chain(),
		"only nils": middleware.Chain(nil, nil),
	} {
		if got := m(h); got != h {
			t.Errorf("Chain(%s)(h) = %v, want h itself", name, got)
		}
	}
}

func TestChainCopiesItsArguments(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	ms := []middleware.Middleware{tr.named("a")}
	chain := middleware.Chain(ms...)
	ms[0] = tr.named("changed")
	_ = chain(tr.handler(nil)).Handle(context.Background(), &handler.Message{})
	if want := []string{"a-before", "h", "a-after"}; !slices.Equal(tr.events, want) {
		t.Fatalf("order = %v, want %v", tr.events, want)
	}
}
