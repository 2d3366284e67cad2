package middleware_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// waitDone is a handler that honours its context: it blocks until ctx is
// done and returns ctx.Err().
var waitDone = handler.HandlerFunc(func(ctx context.Context, _ *handler.Message) error {
	<-ctx.Done()
	return ctx.Err()
})

func TestTimeoutExpires(t *testing.T) {
	t.Parallel()
	const d = 20 * time.Millisecond
	start := time.Now()
	err := middleware.Timeout(d)(waitDone).Handle(context.Background(), &handler.Message{})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || handler.ErrorType(err) != "timeout" {
		t.Fatalf("err = %v (type %q), want context.DeadlineExceeded, \"timeout\"", err, handler.ErrorType(err))
	}
	// Generous upper bound: -race on a busy 2-core machine may be slow.
	if took < d || took > d+5*time.Second {
		t.Fatalf("handler returned after %v, want about %v", took, d)
	}
}

func TestTimeoutDeadlineIsVisible(t *testing.T) {
	t.Parallel()
	const d = time.Hour
	var deadline time.Time
	var ok bool
	h := handler.HandlerFunc(func(ctx context.Context, _ *handler.Message) error {
		deadline, ok = ctx.Deadline()
		return nil
	})
	before := time.Now()
	if err := middleware.Timeout(d)(h).Handle(context.Background(), &handler.Message{}); err != nil {
		t.Fatalf("Handle returned %v", err)
	}
	after := time.Now()
	if !ok || deadline.Before(before.Add(d)) || deadline.After(after.Add(d)) {
		t.Fatalf("Deadline() = %v, %v; want about now+%v", deadline, ok, d)
	}
}

func TestTimeoutParentCancellationPropagates(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		cancel() // the caller gives the message up while it runs
		return waitDone(ctx, m)
	})
	err := middleware.Timeout(time.Hour)(h).Handle(ctx, &handler.Message{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled from the parent", err)
	}
}

func TestTimeoutParentDeadlineEarlierWins(t *testing.T) {
	t.Parallel()
	parent, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, _ := parent.Deadline()
	h := handler.HandlerFunc(func(ctx context.Context, _ *handler.Message) error {
		if got, _ := ctx.Deadline(); !got.Equal(want) {
			return errors.New("deadline is not the parent's earlier one")
		}
		return nil
	})
	if err := middleware.Timeout(time.Hour)(h).Handle(parent, &handler.Message{}); err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutReturnsWhatTheHandlerReturns(t *testing.T) {
	t.Parallel()
	own := errors.New("own failure")
	for _, want := range []error{nil, own} {
		// The handler sees the deadline pass, then finishes anyway.
		h := handler.HandlerFunc(func(ctx context.Context, _ *handler.Message) error {
			<-ctx.Done()
			return want
		})
		err := middleware.Timeout(time.Millisecond)(h).Handle(context.Background(), &handler.Message{})
		if err != want {
			t.Errorf("Timeout returned %v after the deadline, want the handler's %v", err, want)
		}
	}
}

func TestTimeoutNonPositiveIsNoOp(t *testing.T) {
	t.Parallel()
	ctx := context.WithValue(context.Background(), struct{}{}, "v")
	for _, d := range []time.Duration{0, -time.Second} {
		h := handler.HandlerFunc(func(got context.Context, _ *handler.Message) error {
			if got != ctx {
				return errors.New("handler got a different context")
			}
			return nil
		})
		if w := middleware.Timeout(d)(h); w.Handle(ctx, &handler.Message{}) != nil {
			t.Errorf("Timeout(%v) changed the context", d)
		}
	}
}
