package engine

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/outbox"
	"github.com/kafkaworker/kafkaworker/retry"
)

// task is one message on its way through a partition, from admission until
// it is done; it is held in memory only that long.
type task struct {
	part *partition
	msg  handler.Message
	node commit.Handle // its handle in the partition's commit state
	key  *keyState     // its key's FIFO; nil when the message waits for nothing
	// lazy: admitted without its key's FIFO, to run inline in its turn,
	// and neither done nor chained since (lazy.go); guarded by p.mu once
	// the stretch runs.
	lazy bool
	// direct: run before admission, on a direct run's scratch task
	// (direct.go); guarded by p.mu once it runs.
	direct  bool
	next    *task // next message of the same key, admitted after this one
	attempt int   // deliveries on this hop so far; the delivering goroutine's
	// attemptShown mirrors attempt for readers under p.mu (stuck reports).
	attemptShown atomic.Int32
	fail         *failure
	// out is what the handler produced (worker.Produce); made at the
	// task's first delivery and kept when the task is reused.
	out *outbox.Delivery
	// emitting: the handler succeeded and its output waits to be sent.
	emitting bool
	// inTxn: its records are in the open transaction, which it holds open
	// (txn.Enter) until its completion is in the commit state.
	inTxn bool
	// Batching (batch.go): gathered means it waits to be cut into a lot;
	// lot is the lot it runs in, and the lot's first task carries it to
	// the pool.
	gathered bool
	lot      *lot
	takenAt  time.Duration // when it was admitted, on the coarse clock
	stuck    bool          // reported as stuck (see stuck.go)

	// From a retry tier: deliveries before this hop, and the due time.
	base      int
	notBefore time.Time

	took  time.Duration // the last delivery's handler time
	delay time.Duration // timestamp to the first delivery's start, until recorded
	// hasDelay says delay waits to be recorded.
	hasDelay bool
	outcome  metricdef.Result // the last delivery's outcome, when noted
	noted    bool             // outcome and took wait to be recorded
}

// Offset is the message's offset: what the commit state tracks it by.
func (t *task) Offset() int64 { return t.msg.Offset }

// keyState is one key's FIFO: its last admitted message still pending.
// Entries stay in the partition's map while the key is idle (last nil), so
// a busy key costs no map insert, delete or key string per message; idle
// entries are swept when they pile up (sweepKeys).
type keyState struct {
	last *task
	// heldIn is the lot in which a message of the key did not end done
	// (batch.go): the lot's later messages of the key wait behind it. Only
	// the goroutine running that lot reads or writes it: a key is in one
	// lot at a time.
	heldIn   *lot
	heldFrom int64 // ... from this offset on
}

// initTask fills t for message m. t is fresh (zero) memory or recycled
// (see recycle): only what is not zero is written, field by field, and
// part and the topic only when they differ, so that a reused task costs
// few pointer writes (each pays a write barrier while the GC marks).
func (p *partition) initTask(t *task, m *sarama.ConsumerMessage) {
	if t.part != p {
		t.part = p
	}
	if t.msg.Topic != m.Topic {
		t.msg.Topic = m.Topic
	}
	t.msg.Partition, t.msg.Offset = m.Partition, m.Offset
	t.msg.Key, t.msg.Value, t.msg.Timestamp = m.Key, m.Value, m.Timestamp
	if len(m.Headers) > 0 {
		t.msg.Headers = make([]handler.Header, 0, len(m.Headers))
		for _, h := range m.Headers {
			if h != nil {
				t.msg.Headers = append(t.msg.Headers, handler.Header{Key: string(h.Key), Value: h.Value})
			}
		}
	}
	if p.hop.Tier > 0 {
		delay := p.fwd.TierDelay(p.hop.Tier) // a tier always has a delay and a forwarder
		base, notBefore, problems := retry.ReadTierHeaders(t.msg.Headers, delay, time.Now())
		t.base, t.notBefore = base, notBefore
		for _, problem := range problems {
			p.log.Warn("retry record header corrected", p.msgAttrs(t, slog.String("problem", problem))...)
		}
	}
}

// taskChunk is how many tasks are allocated at once: one allocation for
// many messages, and small enough (under 32 KiB) to stay a small-object
// allocation, which large ones (zeroed page runs, scavenged afterwards) are
// not.
const taskChunk = 64

// takeFree moves up to n tasks from the free list into the dispatcher's
// reuse buffer and returns them. Called with p.mu held.
func (p *partition) takeFree(n int) []*task {
	n = min(n, len(p.free))
	if n == len(p.free) { // all of them: swap the buffers rather than copy
		reuse := p.free
		p.free, p.reuse = p.reuse[:0], reuse[:0]
		return reuse
	}
	reuse := append(p.reuse[:0], p.free[len(p.free)-n:]...)
	clear(p.free[len(p.free)-n:])
	p.free = p.free[:len(p.free)-n]
	p.reuse = reuse[:0]
	return reuse
}

// nextTask returns a fresh task, carved from chunks of taskChunk, with its
// outbox (carved the same way: a fresh task costs no allocation of its
// own). Tasks are reused once done (see complete), so a partition
// allocates about as many as it holds at its peak; the handler owns the
// *handler.Message only until Handle returns, as its documentation says.
// Only the dispatcher calls it.
func (p *partition) nextTask() *task {
	if len(p.spare) == 0 {
		p.spare = make([]task, taskChunk)
		p.spareOut = outbox.NewChunk(p.ctx, taskChunk)
	}
	t := &p.spare[0]
	t.out = &p.spareOut[0]
	p.spare, p.spareOut = p.spare[1:], p.spareOut[1:]
	return t
}

// keyOf returns the FIFO of the messages with key, or nil when a message
// with it waits for nothing. The map is the dispatcher's own (only admit
// and sweepKeys, both on the dispatcher, touch it), so the lookup needs no
// lock; the FIFOs' contents are guarded by mu (see chain).
func (p *partition) keyOf(key []byte) *keyState {
	switch {
	case p.ordering == OrderByPartition:
		key = nil // one chain for the whole partition
	case p.ordering != OrderByKey || key == nil:
		return nil // independent
	}
	ks := p.keys[string(key)] // no allocation for the lookup
	if ks == nil {
		ks = &keyState{}
		p.keys[string(key)] = ks
	}
	return ks
}

// chain appends t to its key's FIFO (t.key, from keyOf) and reports whether
// it must wait for an earlier message. Called with p.mu held.
func (p *partition) chain(t *task) (waits bool) {
	ks := t.key
	if ks == nil {
		return false
	}
	if ks.last != nil {
		ks.last.next = t
		waits = !ks.last.gathered // batching: it joins its gathered predecessor
	}
	ks.last = t
	return waits
}

// sweepKeys forgets idle keys once they far outnumber the busy ones, so a
// stream of ever new keys does not grow the map without bound. Called with
// p.mu held.
func (p *partition) sweepKeys() {
	if len(p.keys) < 4096 || len(p.keys) < 4*p.state.Held() {
		return
	}
	for k, ks := range p.keys {
		if ks.last == nil {
			delete(p.keys, k)
		}
	}
}

// recycle readies a done task for reuse as if it were fresh (zero) memory,
// but for part and out, which stay (a task is its partition's, and its
// outbox is made once), and msg.Topic. A pointer is written only where it
// is set: while the garbage collector marks, every pointer write pays a
// write barrier, and clearing the whole task would pay one for each of its
// pointers, set or not. TestRecycleClearsEveryField guards the list.
func (t *task) recycle() {
	if t.key != nil {
		t.key = nil
	}
	if t.next != nil {
		t.next = nil
	}
	if t.fail != nil {
		t.fail = nil
	}
	if t.lot != nil {
		t.lot = nil
	}
	if t.msg.Key != nil || t.msg.Value != nil || t.msg.Headers != nil {
		t.msg.Key, t.msg.Value, t.msg.Headers = nil, nil, nil
	}
	if t.notBefore != (time.Time{}) {
		t.notBefore = time.Time{}
	}
	t.msg.Partition, t.msg.Offset = 0, 0
	t.msg.Timestamp = time.Time{}
	t.node, t.lazy, t.direct, t.attempt = 0, false, false, 0
	if t.attemptShown.Load() != 0 {
		t.attemptShown.Store(0)
	}
	t.emitting, t.inTxn, t.gathered, t.takenAt, t.stuck = false, false, false, 0, false
	t.base, t.took, t.delay, t.hasDelay, t.outcome, t.noted = 0, 0, 0, false, 0, false
}
