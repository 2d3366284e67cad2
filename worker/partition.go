package worker

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/retry"
)

// partState is where a claimed partition is in its life.
type partState int32

const (
	// partRunning: messages are admitted and handlers started.
	partRunning partState = iota
	// partDraining: no handler starts; running ones may still finish and
	// their offsets are marked.
	partDraining
	// partFenced: the claim is gone; results are discarded.
	partFenced
)

// task is one message on its way through a partition.
type task struct {
	part    *partition
	msg     handler.Message
	seq     uint64 // admission order within the claim, indexes the ring
	key     string
	keyed   bool  // waits for the previous message with the same key
	next    *task // next message of the same key, admitted after this one
	attempt int   // deliveries on this hop so far
	fail    *failure

	// From a retry tier: deliveries before this hop, and the due time.
	base      int
	notBefore time.Time

	took    time.Duration // the last delivery's handler time
	delay   time.Duration // timestamp to the first delivery's start, until recorded
	outcome result        // the last delivery's outcome, when noted
	noted   bool          // outcome and took wait to be recorded
}

// slot is the ring entry of an admitted message.
type slot struct {
	offset int64
	done   bool
}

// partition holds one claim's state: the per-key FIFOs, the ring of admitted
// offsets from which the committable offset is derived, and the in-flight
// budget (the ring's capacity). One mutex guards it all; the claim's
// dispatcher and the pool goroutines finishing its tasks take it briefly.
type partition struct {
	topic     string
	id        int32
	hop       hop            // source topic or retry tier
	fwd       *forwarder     // nil when nothing is forwarded
	metrics   *deliveryStats // nil in unit tests
	all       *metrics
	tracing   tracing
	spanAttrs []attribute.KeyValue // the span attributes shared by this partition's deliveries
	ordering  Ordering
	handler   handler.Handler
	pool      *pool
	log       *slog.Logger
	retry     func() backoff.BackOff
	skip      doneSet // offsets the previous owner already handled
	floor     int64   // offsets below it lie before the claim's resolved start: taken as done, never handled

	ctx    context.Context // handlers' context; cancelled when the claim is given up
	cancel context.CancelFunc

	mu         sync.Mutex
	state      atomic.Int32     // a partState; written under mu, read anywhere
	keys       map[string]*task // last admitted task of each key with work pending
	ring       []slot
	head, tail uint64                      // ring[head%len] is the oldest unfinished message; tail is the next seq
	running    atomic.Int32                // handlers inside run
	sess       sarama.ConsumerGroupSession // the claim's session: member and generation for commits
	marked     int64                       // next offset to consume: every offset below it is done
	meta       string                      // done-set of what finished at or above marked
	committed  int64                       // marked and meta as last acknowledged by the coordinator
	commitMeta string
	released   bool // the final commit was made: commit nothing more

	inFlightReported int64 // this partition's share of the in-flight gauge
	metaDirty        bool  // done entries behind an unfinished one changed since meta
	skipped          int   // messages skipped because skip held them
	backingOff       map[*task]*time.Timer
	idle             chan struct{} // closed once draining and no handler runs
	idleOnce         sync.Once
	starved          bool          // the dispatcher holds messages the budget refused
	freed            chan struct{} // wakes the dispatcher when budget frees up

	scratch, ready []*task // admit's buffers, reused; only the dispatcher touches them
}

// initTask fills t for message m.
func (p *partition) initTask(t *task, m *sarama.ConsumerMessage) {
	*t = task{part: p, msg: handler.Message{
		Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
		Key: m.Key, Value: m.Value, Timestamp: m.Timestamp,
	}}
	if len(m.Headers) > 0 {
		t.msg.Headers = make([]handler.Header, 0, len(m.Headers))
		for _, h := range m.Headers {
			if h != nil {
				t.msg.Headers = append(t.msg.Headers, handler.Header{Key: string(h.Key), Value: h.Value})
			}
		}
	}
	// The key string is set by admit, which can reuse the one in p.keys.
	t.keyed = p.ordering == OrderByPartition || (p.ordering == OrderByKey && m.Key != nil)
	if p.hop.tier > 0 {
		if v, ok := t.msg.Header(retry.HeaderAttempt); ok {
			t.base, _ = strconv.Atoi(string(v))
		}
		if v, ok := t.msg.Header(retry.HeaderNotBefore); ok {
			if ms, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				t.notBefore = time.UnixMilli(ms)
			}
		}
	}
}

// admit takes in, in order, as many of ms as the in-flight budget allows,
// starts those whose key has no earlier message pending, and returns how
// many it took. full reports that the budget is used up; a completion will
// then wake the dispatcher through freed. Only the dispatcher calls admit.
func (p *partition) admit(ms []*sarama.ConsumerMessage) (n int, full bool) {
	p.mu.Lock()
	n = min(len(ms), len(p.ring)-int(p.tail-p.head))
	p.mu.Unlock()
	// The budget only grows meanwhile, so n messages will fit. Build their
	// tasks outside the lock.
	// One allocation for the batch's tasks rather than one per message.
	slab := make([]task, n)
	built := p.scratch[:0]
	for i, m := range ms[:n] {
		if m.Offset >= p.floor && !p.skip.contains(m.Offset) {
			p.initTask(&slab[i], m)
			built = append(built, &slab[i])
		}
	}
	tasks, ready := built, p.ready[:0]

	p.mu.Lock()
	size := uint64(len(p.ring))
	skippedAny := false
	for _, m := range ms[:n] {
		if len(tasks) == 0 || tasks[0].msg.Offset != m.Offset {
			p.ring[p.tail%size] = slot{offset: m.Offset, done: true} // the previous owner did it
			p.tail++
			p.skipped++
			skippedAny = true
			continue
		}
		t := tasks[0]
		tasks = tasks[1:]
		t.seq = p.tail
		p.ring[t.seq%size] = slot{offset: m.Offset}
		p.tail++
		if !t.keyed {
			ready = append(ready, t)
			continue
		}
		key := m.Key
		if p.ordering == OrderByPartition {
			key = nil // one chain for the whole partition
		}
		if last, ok := p.keys[string(key)]; ok { // no allocation for the lookup
			t.key = last.key
			last.next = t
		} else {
			t.key = string(key)
			ready = append(ready, t)
		}
		p.keys[t.key] = t
	}
	if p.metrics != nil {
		p.metrics.consumed += uint64(n)
	}
	if skippedAny {
		p.metaDirty = true
		p.advance()
	}
	if n < len(ms) && p.tail-p.head == size {
		p.starved = true
		full = true
	}
	p.mu.Unlock()

	p.pool.pushAll(ready)
	clear(built)
	clear(ready)
	p.scratch, p.ready = built[:0], ready[:0]
	return n, full
}

// run delivers t to the handler and records the outcome. It returns the
// next task of t's key when that may start now, for the caller to run.
func (p *partition) run(t *task) *task {
	// Counted before the state is read, so that drain, which sets the state
	// first and then reads the count, cannot miss a handler about to start.
	p.running.Add(1)
	if p.loadState() != partRunning || p.notDue(t) {
		p.finishRun()
		return nil
	}

	err := p.deliver(t)

	p.mu.Lock()
	p.record(t)
	var next *task
	state := p.loadState() // changes only under p.mu
	switch {
	case state == partFenced:
		// The claim was given up while the handler ran: discard.
	case err == nil:
		next = p.complete(t)
	case state == partRunning:
		p.scheduleRetry(t, err)
	}
	p.mu.Unlock()
	p.finishRun()
	if state != partRunning {
		return nil
	}
	return next
}

// finishRun ends a run and, once draining, tells drain when none is left.
func (p *partition) finishRun() {
	if p.running.Add(-1) == 0 && p.loadState() != partRunning {
		p.closeIdle()
	}
}

func (p *partition) closeIdle() { p.idleOnce.Do(func() { close(p.idle) }) }

func (p *partition) loadState() partState { return partState(p.state.Load()) }

// setState changes the state; called with p.mu held.
func (p *partition) setState(s partState) { p.state.Store(int32(s)) }

// reportInFlight moves the in-flight gauge by this partition's change since
// its last report: the gauge is shared by every partition (and by workers of
// the same group on one registry), so it is adjusted, never set, and not on
// every message. gone reports the partition's final zero.
func (p *partition) reportInFlight(gone bool) {
	if p.all == nil {
		return
	}
	p.mu.Lock()
	now := int64(p.tail - p.head)
	if gone {
		now = 0
	}
	delta := now - p.inFlightReported
	p.inFlightReported = now
	p.mu.Unlock()
	if delta != 0 {
		p.all.inFlight.Add(float64(delta))
	}
}

func (p *partition) call(ctx context.Context, t *task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &handler.PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	if n := t.base + t.attempt; n > 1 {
		ctx = retry.WithAttempt(ctx, n)
	}
	return p.handler.Handle(ctx, &t.msg)
}

// complete records t as done, marks the new committable offset if t was the
// oldest unfinished message, and returns t's successor in its key's FIFO.
// Called with p.mu held.
func (p *partition) complete(t *task) *task {
	var next *task
	if t.keyed {
		next = t.next
		if next == nil {
			delete(p.keys, t.key) // t was the last pending message of its key
		}
		t.next = nil
	}
	p.ring[t.seq%uint64(len(p.ring))].done = true
	if t.seq != p.head {
		p.metaDirty = true
		return next
	}
	p.advance()
	return next
}

// advance retires the done entries at the head of the ring, marks the
// offset after the last one, and wakes a starved dispatcher. Called with
// p.mu held.
func (p *partition) advance() {
	n := uint64(len(p.ring))
	if p.head == p.tail || !p.ring[p.head%n].done {
		return
	}
	var last int64
	for p.head < p.tail && p.ring[p.head%n].done {
		last = p.ring[p.head%n].offset
		p.head++
	}
	p.marked = max(p.marked, last+1)
	if p.starved {
		p.starved = false
		select {
		case p.freed <- struct{}{}:
		default:
		}
	}
}

// refreshDoneSet records, in the metadata of the next commit, which
// messages behind the oldest unfinished one are already done, so that no
// later owner of the partition handles them again. Called with p.mu held.
func (p *partition) refreshDoneSet() {
	if !p.metaDirty {
		return
	}
	p.metaDirty = false
	n := uint64(len(p.ring))
	if p.head == p.tail {
		return
	}
	var ranges []offsetRange
	open := false
	for seq := p.head; seq < p.tail; seq++ {
		s := p.ring[seq%n]
		switch {
		case s.done && open:
			ranges[len(ranges)-1].end = s.offset + 1
		case s.done:
			ranges = append(ranges, offsetRange{s.offset, s.offset + 1})
			open = true
		default:
			open = false
		}
	}
	// Carry forward what the previous owner finished beyond what this owner
	// has taken in yet, or a commit now would erase it.
	next := p.ring[(p.tail-1)%n].offset + 1
	for _, r := range p.skip {
		if r.end > next {
			ranges = append(ranges, offsetRange{max(r.start, next), r.end})
		}
	}
	base := p.ring[p.head%n].offset
	p.meta = encodeDoneSet(base, ranges)
	p.marked = max(p.marked, base)
}

// pendingCommit reports whether marked or meta differ from what the
// coordinator last acknowledged. Called with p.mu held.
func (p *partition) pendingCommit() bool {
	return p.marked >= 0 && (p.marked != p.committed || p.meta != p.commitMeta)
}

// drain stops starting handlers, waits up to timeout for the running ones,
// then fences the partition and cancels the handlers' context. It returns
// how many handlers were still running, whose results will be discarded.
func (p *partition) drain(timeout time.Duration) int {
	p.mu.Lock()
	p.setState(partDraining)
	for t, timer := range p.backingOff {
		timer.Stop()
		delete(p.backingOff, t)
	}
	p.mu.Unlock()
	if p.running.Load() == 0 {
		p.closeIdle()
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.idle:
	case <-timer.C:
	}

	p.mu.Lock()
	p.refreshDoneSet()
	p.setState(partFenced)
	abandoned := int(p.running.Load())
	p.mu.Unlock()
	p.cancel()
	return abandoned
}
