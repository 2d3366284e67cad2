package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

type ctxKey struct{}

func TestAddOnlyWhileTheDeliveryIsOpen(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "parent")
	d := New(parent)
	if err := Add(d, Record{Topic: "out"}); !errors.Is(err, ErrNoDelivery) {
		t.Fatalf("Add before Begin: want ErrNoDelivery, got %v", err)
	}
	if err := Add(context.Background(), Record{Topic: "out"}); !errors.Is(err, ErrNoDelivery) {
		t.Fatalf("Add with a context that is no handler's: want ErrNoDelivery, got %v", err)
	}
	d.Begin()
	// The handler's context is usually wrapped (tracing, retry attempt,
	// the handler's own values): Add finds the delivery through them.
	wrapped, cancel := context.WithCancel(context.WithValue(d, ctxKey{}, "inner"))
	defer cancel()
	if err := Add(wrapped, Record{Topic: "out", Value: []byte("1")}); err != nil {
		t.Fatalf("Add during the delivery: %v", err)
	}
	if got := d.Value(ctxKey{}); got != "parent" {
		t.Fatalf("a Delivery answers other keys from its parent: got %v", got)
	}
	recs := d.End()
	if len(recs) != 1 || string(recs[0].Value) != "1" {
		t.Fatalf("End returned %v, want the one record added", recs)
	}
	if err := Add(wrapped, Record{Topic: "out"}); !errors.Is(err, ErrNoDelivery) {
		t.Fatalf("Add after End (Handle returned): want ErrNoDelivery, got %v", err)
	}
	if len(d.End()) != 1 {
		t.Fatal("a refused Add must not change the records")
	}
	d.Reset()
	d.Begin()
	if len(d.End()) != 0 {
		t.Fatal("after Reset a new delivery starts with no records")
	}
}

func TestAddFromTheHandlersGoroutines(t *testing.T) {
	d := New(context.Background())
	d.Begin()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if err := Add(d, Record{Topic: "out", Value: fmt.Appendf(nil, "%d/%d", g, i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range d.End() {
		seen[string(r.Value)] = true
	}
	if len(seen) != 800 {
		t.Fatalf("8 goroutines added 100 records each: want 800 distinct, got %d", len(seen))
	}
}

func TestDeliveryContextKeepsItsParentsCancellation(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	d := New(parent)
	d.Begin()
	cancel()
	select {
	case <-d.Done():
	default:
		t.Fatal("the delivery's context must be done once its parent is")
	}
	d.End()
	d.Reset()
	if d.Err() == nil {
		t.Fatal("Reset must keep the parent: a goroutine left behind may still read the context")
	}
}

// The engine may open a delivery again without its End (a delivery that
// failed); End must still return at once, not wait for an Add.
func TestBeginTwiceThenEndReturns(t *testing.T) {
	d := New(context.Background())
	d.Begin()
	d.Begin()
	done := make(chan struct{})
	go func() { d.End(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("End after two Begins waited for an Add that never was")
	}
}
