// Package outbox holds what a handler produces while it handles one
// message, until the delivery's outcome is known: the records are sent only
// when Handle returned nil, and dropped when it failed, so a message retried
// in place, through a retry topic or dead-lettered never emits twice what
// its failed deliveries produced.
//
// A Delivery is the innermost layer of the context a handler receives. The
// engine keeps one in each of its reusable tasks, made once, so a delivery
// costs no allocation until the handler produces something. Its parent
// never changes (the partition's context), so a goroutine the handler
// leaves behind may still read its context after Handle returned; adding
// output through it then fails with ErrNoDelivery, or, once the task took
// the next message, joins that message's output: like the Message, the
// context is the handler's only until Handle returns.
package outbox

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/kafkaworker/kafkaworker/producer"
)

// Record is one output record, as the handler gave it (a copy of its
// producer.Message; Key, Value and Headers are shared, not copied).
type Record = producer.Message

// ErrNoDelivery is Add's error for a context that is not a handler's, or a
// handler's whose Handle has returned.
var ErrNoDelivery = errors.New("not a handler's context, or its Handle has returned: output can only be added while Handle runs, with the context it was given (or one derived from it)")

// key is the context key a Delivery answers to.
type key struct{}

// Delivery is one delivery's context: the handler's context, plus the
// records it produced. Add is safe for concurrent use, so a handler may
// produce from goroutines of its own while Handle runs; Begin, End and
// Reset are the engine's, on the goroutine that runs the delivery.
type Delivery struct {
	context.Context

	// state is openBit between Begin and End, plus addStep per Add under
	// way, which End waits for: one word, so that a delivery that
	// produces nothing costs two atomic operations.
	state atomic.Int32
	mu    sync.Mutex // guards recs between Adds
	recs  []Record
}

// Value answers the outbox's key with d, and any other from the parent.
func (d *Delivery) Value(k any) any {
	if k == (key{}) {
		return d
	}
	return d.Context.Value(k)
}

// New makes a Delivery under parent, which it keeps for life.
func New(parent context.Context) *Delivery { return &Delivery{Context: parent} }

// NewChunk makes n Deliveries under parent in one allocation, for callers
// that hand them out one per reusable task.
func NewChunk(parent context.Context, n int) []Delivery {
	ds := make([]Delivery, n)
	for i := range ds {
		ds[i].Context = parent
	}
	return ds
}

const (
	openBit = 1
	addStep = 2
)

// Begin opens a delivery. Its records are those the last Reset left:
// none. (Not a store: a late Add from the last delivery's goroutines may
// still be counted.)
func (d *Delivery) Begin() { d.state.Or(openBit) }

// End closes the delivery to further records and returns those produced,
// in the order they were added; an Add under way is waited for. The slice
// is d's until Reset.
func (d *Delivery) End() []Record {
	// An Add counts itself and looks at openBit in one step: either it
	// sees the delivery closed, or End sees it under way and waits for it.
	for !d.state.CompareAndSwap(openBit, 0) && !d.state.CompareAndSwap(0, 0) {
		runtime.Gosched()
	}
	return d.recs
}

// Reset drops the records, once sent or discarded. Called after End.
func (d *Delivery) Reset() {
	clear(d.recs)
	d.recs = d.recs[:0]
}

// ErrInBatch is Add's error in a batch handler's context (see InBatch).
var ErrInBatch = errors.New("output from a BatchHandler is not supported yet: a batch's messages succeed and fail one by one, and its output cannot be told apart by message; produce from a Handler (worker.New), or send with a producer.Producer of your own (at-least-once)")

// batchKey is the context key InBatch sets.
type batchKey struct{}

// InBatch marks ctx as a batch handler's, where Add fails with ErrInBatch
// rather than ErrNoDelivery.
func InBatch(ctx context.Context) context.Context { return context.WithValue(ctx, batchKey{}, true) }

// Add appends r to the delivery ctx belongs to. It fails with ErrNoDelivery
// when ctx is no handler's, or its Handle returned, and with ErrInBatch in
// a batch handler's.
func Add(ctx context.Context, r Record) error {
	d, _ := ctx.Value(key{}).(*Delivery)
	if d == nil {
		if ctx.Value(batchKey{}) != nil {
			return ErrInBatch
		}
		return ErrNoDelivery
	}
	defer d.state.Add(-addStep)
	if d.state.Add(addStep)&openBit == 0 {
		return ErrNoDelivery
	}
	d.mu.Lock()
	d.recs = append(d.recs, r)
	d.mu.Unlock()
	return nil
}
