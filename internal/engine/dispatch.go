package engine

import (
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// maxBatch is how many messages the dispatcher takes from the claim before
// admitting them under one lock.
const maxBatch = 256

// stallAfter is how long a partition's budget may stay used up before the
// dispatcher pauses its fetching and goes back to reading the claim.
const stallAfter = 500 * time.Millisecond

// dispatcher moves one claim's messages into its partition.
//
// Memory is bounded without pausing in the common case: when the in-flight
// budget is used up the dispatcher stops reading, and sarama holds back
// (what it already fetched waits in its channel and fetch buffer, and the
// other partitions keep fetching). Not reading has one cost: sarama's only
// sign of a cooperative revocation is Messages() closing, which is seen only
// by reading. So if the budget stays used up for stallAfter (a slow or stuck
// message at the head), the dispatcher pauses the partition's fetching and
// reads on into an overflow, which the pause bounds to what sarama had
// already fetched; a revocation is then noticed at once. Pausing is kept for
// that case because a paused broker connection idles for 100ms in sarama.
type dispatcher struct {
	group     sarama.ConsumerGroup // pauses and resumes the claim's fetching
	metrics   *telemetry.Metrics
	stopping  <-chan struct{} // Run's stop
	tickEvery time.Duration
	p         *partition
	claim     sarama.ConsumerGroupClaim
	tp        map[string][]int32
	chunk     int // admitted at most before they run inline (Consumer.chunk)

	// The dispatching goroutine's (see run): only one at a time dispatches.
	done      <-chan struct{}                // the session's end
	msgs      <-chan *sarama.ConsumerMessage // the claim's
	in        <-chan *sarama.ConsumerMessage // msgs, or nil while holding back
	tick      *time.Ticker                   // lag, status, held messages
	ended     chan struct{}                  // closed when the dispatching is over
	cool      time.Duration                  // the last cool-down of inline runs (inline.go); 0 after a fast stretch
	poolUntil time.Duration                  // until then (coarse clock) the partition's messages go to the pool

	overflow  []*sarama.ConsumerMessage // taken from the claim, not yet admitted
	head      int                       // overflow[head:] is pending
	more      bool                      // overflow[head:] waits only for its chunk's turn (admitAndRun)
	paused    bool
	holding   bool        // not reading: the budget is used up
	blockedBy string      // why intake stopped, while it is stopped: "in_flight" or "done_set"
	stall     *time.Timer // runs while holding; on expiry, pause and read on

	// A retry tier's partition that holds nothing is paused while idle
	// (tierwatch.go): watch is nil for a source partition.
	watch      *TierWatch
	next       int64           // the offset after the last one taken; below 0 while not known
	idle       *idleTier       // paused for want of records, waiting for the watch; nil otherwise
	wake       <-chan struct{} // idle.wake, or nil
	awakeUntil int64           // woken: stays fetched until it has read this far...
	awakeBy    time.Time       // ...or until this, whichever comes first
}

// awakeFor bounds how long a woken tier partition stays fetched without
// reading as far as the watch said records were: they may have been
// deleted, or be transaction markers, which no consumer receives.
const awakeFor = 10 * time.Second

// newDispatcher makes the dispatcher of claim, whose state is p.
func newDispatcher(c *Consumer, p *partition, claim sarama.ConsumerGroupClaim) *dispatcher {
	d := &dispatcher{group: c.ConsumerGroup, metrics: c.Metrics, stopping: c.Stopping, tickEvery: c.TickEvery,
		p: p, claim: claim, chunk: c.chunk, tp: map[string][]int32{claim.Topic(): {claim.Partition()}}, next: -1}
	if p.hop.Tier > 0 {
		d.watch = c.TierWatch
	}
	return d
}

// run dispatches until the claim closes, done or Run's stop fires. The
// dispatching runs on a goroutine of its own, which may run messages
// inline and be replaced by another when a handler holds it (inline.go):
// run waits for whichever ends it, so that a handler that never returns
// cannot keep the claim from being released.
func (d *dispatcher) run(done <-chan struct{}) {
	d.done = done
	d.msgs = d.claim.Messages()
	d.in = d.msgs
	d.tick = time.NewTicker(d.tickEvery)
	d.stall = time.NewTimer(time.Hour)
	d.stall.Stop()
	d.ended = make(chan struct{})
	d.startIdleWatch()
	d.dispatch()
	<-d.ended
	d.tick.Stop()
	d.stall.Stop()
	d.resume() // sarama keeps a pause across reassignment: never leave one behind
}

// loop dispatches on the calling goroutine, with r its inline runs. It
// reports true when the dispatching is over (the claim closed, done or
// Run's stop fired, or, exactly-once, the transaction aborted), false when
// a handler it ran inline held it and another goroutine dispatches now.
func (d *dispatcher) loop(r *inlineRun) bool {
	for {
		// d.more: the last goroutine lost the dispatching between the
		// chunks of a read, whose rest is admitted first (the claim's next
		// message may never come).
		if !d.more {
			over, admit := d.wait()
			if over {
				return true
			}
			if !admit {
				continue
			}
		}
		if !d.admitAndRun(r) {
			return false
		}
	}
}

// wait waits for what the dispatcher acts on: it reports over when the
// dispatching is over, admit when what was read may be admitted.
func (d *dispatcher) wait() (over, admit bool) {
	select {
	case m, ok := <-d.in:
		if !ok {
			return true, false
		}
		d.wakeUp() // a record fetched before the pause took hold
		if !d.take(m, d.in) {
			return true, false
		}
	case <-d.p.state.Freed():
	case <-d.stall.C:
		d.group.Pause(d.tp)
		d.paused, d.holding = true, false
	case <-d.tick.C:
		d.p.flushHeld() // first, so what follows counts every completion
		d.reportLag()
		d.p.reportInFlight(false)
		d.p.watchHeld()
		d.maybeIdle()
		return false, false
	case <-d.wake:
		d.wakeUp()
		return false, false
	case <-d.done:
		return true, false
	case <-d.stopping:
		return true, false
	case <-d.p.aborted: // exactly-once: its transaction aborted; given up, handled again
		return true, false
	}
	return false, true
}

// admitAndRun admits what was read, as the budget allows, and runs what
// became ready inline when the partition may (inline.go): then a chunk at
// a time, each run before the next is admitted. The chunks run inline for
// inlineBudget at most together, as one admission's stretch did: then the
// rest goes to the pool, and the dispatcher back to its select (a stop, a
// revocation), however much a pause let it read. It reports false when a
// handler held this goroutine and another dispatches now.
func (d *dispatcher) admitAndRun(r *inlineRun) bool {
	began := time.Since(clockAnchor)
	for d.more = true; d.more; {
		limit := len(d.overflow)
		if d.p.inline = time.Since(clockAnchor)-began < inlineBudget && r.seat(); d.p.inline {
			limit = d.chunk
			n, ok := r.runDirect(limit)
			if !ok {
				return false
			}
			if n > 0 && d.head < len(d.overflow) {
				continue // the rest: direct again, or admitted
			}
			if n > 0 {
				limit = 0 // all taken: admitPending only resets the overflow
			}
		}
		d.in, d.more = d.admitPending(d.msgs, limit)
		if !r.runReady() {
			return false
		}
	}
	return true
}

// take queues m and whatever else the claim has ready, up to maxBatch. It
// reports false when the claim closed.
func (d *dispatcher) take(m *sarama.ConsumerMessage, in <-chan *sarama.ConsumerMessage) bool {
	d.overflow = append(d.overflow, m)
	for range maxBatch - 1 {
		select {
		case m, ok := <-in:
			if !ok {
				return false
			}
			d.overflow = append(d.overflow, m)
		default:
			d.next = d.overflow[len(d.overflow)-1].Offset + 1
			return true
		}
	}
	d.next = d.overflow[len(d.overflow)-1].Offset + 1
	return true
}

// admitPending admits what the budget allows, but no more than limit, and
// returns the channel to read next: the claim, or nil to hold back while
// the budget is used up. more reports that limit alone stopped it: the
// caller (admitAndRun) admits the rest after running what it admitted.
func (d *dispatcher) admitPending(msgs <-chan *sarama.ConsumerMessage, limit int) (in <-chan *sarama.ConsumerMessage, more bool) {
	for d.head < len(d.overflow) {
		n, full := d.p.admit(d.overflow[d.head:min(len(d.overflow), d.head+limit)])
		clear(d.overflow[d.head : d.head+n])
		d.head += n
		if limit -= n; full {
			break
		}
		if limit == 0 && d.head < len(d.overflow) {
			return msgs, true
		}
	}
	if d.head == len(d.overflow) {
		d.overflow, d.head = d.overflow[:0], 0
		d.holding, d.blockedBy = false, ""
		d.stall.Stop()
		d.resume()
		return msgs, false
	}
	if reason := d.p.intakeReason(); reason != d.blockedBy {
		d.blockedBy = reason
		d.p.noteIntake(reason)
	}
	if d.paused {
		return msgs, false // bounded by the pause; keep watching for a revocation
	}
	if !d.holding {
		d.holding = true
		d.stall.Reset(stallAfter)
	}
	return nil, false
}

func (d *dispatcher) resume() {
	if d.paused {
		d.group.Resume(d.tp)
		d.paused = false
	}
	d.wakeUp()
}

// reportLag sets the partition's lag: the high watermark minus the
// committable offset (or, before anything is done, the first offset taken).
func (d *dispatcher) reportLag() {
	hwm := d.claim.HighWaterMarkOffset()
	if from := d.p.state.Snapshot().Resume; from >= 0 {
		d.metrics.SetLag(d.p.topic, d.p.id, hwm-from)
	}
	d.sampleStatus(hwm) // the status page's partition row (status_sample.go)
}

// startIdleWatch sets where a tier partition's reading starts, and pauses
// it at once if it is empty (the common case for retry tiers).
func (d *dispatcher) startIdleWatch() {
	if d.watch == nil {
		return
	}
	if d.next = d.claim.InitialOffset(); d.next < 0 {
		d.next = d.p.state.Snapshot().Resume // the start startClaim resolved and committed
	}
	d.maybeIdle()
}

// maybeIdle pauses a tier partition that holds nothing and has nothing
// more to read: its high watermark is where reading stopped. The watch
// wakes it (see TierWatch). A high watermark not known yet (before the
// first fetch) reads as 0: the watch then finds the records within
// tierCheckSoon.
func (d *dispatcher) maybeIdle() {
	if d.watch == nil || d.idle != nil || d.paused || d.next < 0 || d.head < len(d.overflow) || d.p.state.Held() > 0 ||
		d.claim.HighWaterMarkOffset() > d.next || (d.next < d.awakeUntil && time.Now().Before(d.awakeBy)) {
		return
	}
	d.group.Pause(d.tp)
	d.idle = d.watch.Idle(d.p.topic, d.p.id, d.next)
	d.wake = d.idle.wake
	d.p.log.Debug("retry-tier partition idle: not fetched until records come", attr.Topic(d.p.topic), attr.Partition(d.p.id), slog.Int64("next", d.next))
}

// wakeUp resumes a partition paused for being idle.
func (d *dispatcher) wakeUp() {
	if d.idle == nil {
		return
	}
	select {
	case <-d.idle.wake: // the watch woke it, and said how far to read
		d.awakeUntil = d.idle.until
	default: // a record came, or the claim is done
		d.awakeUntil = d.next + 1
	}
	d.awakeBy = time.Now().Add(awakeFor)
	d.idle, d.wake = nil, nil
	d.watch.Forget(d.p.topic, d.p.id)
	if !d.paused {
		d.group.Resume(d.tp)
	}
	d.p.log.Debug("retry-tier partition woken: fetched again", attr.Topic(d.p.topic), attr.Partition(d.p.id), slog.Int64("next", d.next))
}
