package engine

import (
	"errors"
	"time"

	"github.com/IBM/sarama"
)

// Direct runs. While nothing of a partition is unfinished, its dispatcher
// runs the messages it read straight from what it read, one after another,
// in offset order, each on one reused task (inlineRun.scratch), and admits
// them to the commit state only once done (commit.State.AdmitDone, one call
// for a run of them): no task is built, no offset reserved and finished,
// no key looked up, per message. A message done is one the commit state has
// not seen yet, so the committable offset cannot pass a message not done:
// it moves only when the done ones are admitted, after the last of them.
//
// A direct message becomes an ordinary admitted task the moment the run
// can no longer vouch for it, always under p.mu, after the done ones before
// it are admitted and before anything later is (admitDirect):
//
//   - it fails and stays unfinished for its retry in place: it is admitted
//     and chained in its key's FIFO, and the run ends there; the rest of
//     what was read is admitted as usual, behind it;
//   - the watchdog takes the run (handoff) while its handler runs: it is
//     admitted and chained, the rest goes to the new dispatching goroutine,
//     and the old one completes it as any task once its handler returns.
//
// The done ones wait in p.directLast, told to the commit state at the end
// of each run, when a message is admitted, and by flushFinished, which
// drain calls before the final commit; and at once while the partition is
// not running. A message the run claimed but that is not done once the
// partition stopped running (not started, or failed while draining) is
// admitted unfinished, for the next owner (leaveUnfinished): a gap between
// admitted offsets counts as done. A handler that returns after the
// partition was fenced is discarded, as in run: the message is handled
// again by the next owner.
//
// Retry tiers (a message may not be due yet), exactly-once and batch
// handlers never run direct; nor a read holding an offset the previous
// owner handled already (commit.State.Handles).

// directAllowed reports whether ms may run direct now, and readies the
// commit state for it (nothing held back). The dispatcher calls it.
func (p *partition) directAllowed(ms []*sarama.ConsumerMessage) bool {
	if len(ms) == 0 || p.hop.Tier != 0 || p.batch != nil || p.txn != nil || p.loadState() != partRunning {
		return false
	}
	for _, m := range ms {
		if !p.state.Handles(m.Offset) {
			return false
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unfinished != 0 {
		return false
	}
	p.flushFinished() // completions held back: admitted before these
	p.directSettled = -1
	return true
}

// runDirect runs up to limit of the messages read, direct, when the
// partition allows it. It returns how many it took from the overflow, and
// false when the watchdog took the dispatching meanwhile.
func (r *inlineRun) runDirect(limit int) (n int, ok bool) {
	d, p := r.d, r.d.p
	ms := d.overflow[d.head:min(len(d.overflow), d.head+limit)]
	if !p.directAllowed(ms) {
		return 0, true
	}
	r.direct, r.directFrom = ms, d.head
	if r.scratch == nil {
		r.scratch = p.nextTask() // now, while this goroutine holds the dispatcher
	}
	began := r.beginStretch()
	ran, over := 0, false
	for !over {
		t := r.claimDirect()
		if t == nil {
			break
		}
		if !p.runDirect(t, r) {
			break // not running any more, or handed off
		}
		ran++
		if ran%inlineLookEvery == 0 {
			over = time.Since(clockAnchor)-began > inlineBudget
		}
		over = over || r.slot.lazyBroke // it failed and was admitted
	}
	v := r.pos.Or(stretchOver)
	r.watchdog.Stop()
	if v&stretchOver != 0 {
		return 0, false // handoff moved d.head
	}
	// Taken: every message claimed, done or admitted (a failure, or, once
	// the partition stopped running, left unfinished: leaveUnfinished).
	n = int(v & stretchIdx)
	d.head += n
	p.mu.Lock()
	p.flushDirect()
	p.flushStats()
	p.mu.Unlock()
	r.direct = nil
	if t := r.scratch; t != nil {
		// Let go of the last record, and so of the fetch buffer it is cut
		// from, while the partition idles (as flushFinished does for tasks).
		t.msg.Key, t.msg.Value, t.msg.Headers = nil, nil, nil
	}
	if ran > 0 {
		d.judge(time.Since(clockAnchor)-began > time.Duration(ran)*inlineMaxAvg)
	}
	r.unseat()
	return n, true
}

// claimDirect returns the run's next message on the scratch task, or nil
// when none is left or the watchdog took the run. The scratch is filled
// before the message is claimed: the watchdog reads it only while the
// message before runs (directSettled), never while it is refilled.
func (r *inlineRun) claimDirect() *task {
	for {
		v := r.pos.Load()
		if v&stretchOver != 0 || int(v&stretchIdx) == len(r.direct) {
			return nil
		}
		t := r.scratchFor(r.direct[v&stretchIdx])
		if r.pos.CompareAndSwap(v, v+1) {
			return t
		}
	}
}

// scratchFor fills the run's scratch task with m. It touches nothing of
// the dispatcher's: the watchdog may have taken the run, and a new
// goroutine the dispatcher, since the last message.
func (r *inlineRun) scratchFor(m *sarama.ConsumerMessage) *task {
	p := r.d.p
	t := r.scratch
	t.recycle()
	p.initTask(t, m)
	t.direct = true
	t.takenAt = p.clock.read()
	return t
}

// runDirect delivers the direct message t and settles it: done (waiting in
// p.directLast), admitted for its retry, or discarded. It reports whether
// the run may go on.
func (p *partition) runDirect(t *task, r *inlineRun) bool {
	slot := r.slot
	slot.part.Store(partID(p)) // before the state is read: see run
	slot.runs.Add(1)
	if p.loadState() != partRunning {
		p.mu.Lock()
		p.directSettled = t.msg.Offset
		p.leaveUnfinished(t, r)
		p.mu.Unlock()
		p.finishRun(slot)
		return false
	}
	err := p.deliver(t)
	p.mu.Lock()
	if !t.direct {
		// The watchdog admitted it while its handler ran: it completes as
		// an admitted task, and its key's next message goes to the pool.
		p.mu.Unlock()
		if next := p.settleRun(t, err, slot); next != nil {
			p.pool.push(next)
		}
		return false
	}
	p.record(t)
	state := p.loadState()
	p.directSettled = t.msg.Offset
	switch {
	case state == partFenced:
		// Given up while the handler ran: discarded, handled again.
	case err == nil:
		p.directLast, p.directDone = t.msg.Offset, p.directDone+1
		if state != partRunning {
			p.flushDirect() // drain may be counting already
		}
	case state == partRunning && !errors.Is(err, errTxnAborted):
		p.admitDirect(t)
		r.scratch = nil // the task is the commit state's now
		slot.lazyBroke = true
		p.scheduleRetry(t, err)
	default:
		p.leaveUnfinished(t, r) // failed while draining: left to the next owner
	}
	p.settle(err != nil, false)
	p.mu.Unlock()
	p.finishRun(slot)
	return state == partRunning
}

// admitDirect makes the direct message t an ordinary admitted task: the
// done ones before it are admitted, then t, unfinished, and it is chained
// in its key's FIFO (nothing of the key is pending: the run ran the earlier
// ones). Called with p.mu held, by whoever holds the dispatcher's part.
func (p *partition) admitDirect(t *task) {
	p.flushDirect()
	o := t.msg.Offset
	p.state.Capacity(1, o)
	hs, _ := p.state.Admit([]int64{o}, []*task{t}, false, o)
	t.node, t.direct = hs[0], false
	t.key = p.keyOf(t.msg.Key)
	p.chain(t)
	p.unfinished++
	p.pending.AddConsumed(1)
}

// leaveUnfinished admits the direct message t, claimed by the run but not
// done (the partition stopped running), as unfinished: it is the next
// owner's, and the committable offset must stop at it. Left out, it would
// be a gap between the offsets admitted around it, which the commit state
// takes as done. Called with p.mu held, by the run.
func (p *partition) leaveUnfinished(t *task, r *inlineRun) {
	if p.loadState() == partFenced {
		p.flushDirect()
		return // nothing is committed any more
	}
	p.admitDirect(t)
	r.scratch = nil // the task is the commit state's now
}

// flushDirect admits the direct messages done since the last flush.
// Called with p.mu held.
func (p *partition) flushDirect() {
	if p.directDone == 0 {
		return
	}
	p.state.AdmitDone(p.directLast)
	p.pending.AddConsumed(p.directDone)
	p.directDone = 0
}

// handoffDirect is the watchdog's part for a direct run: i is the first
// message not started. The message running, unless settled, is admitted,
// and the rest is the new dispatching goroutine's, in an overflow of its
// own (the old goroutine may still read the old one's array). Called with
// the run taken (takeOver).
func (r *inlineRun) handoffDirect(i int) {
	d, p := r.d, r.d.p
	p.mu.Lock()
	// Admitted while draining too: the new goroutine may admit what it
	// reads meanwhile, and the running one, if it succeeds within the
	// drain's wait, must count as it would in run.
	if i > 0 && p.directSettled < r.direct[i-1].Offset && p.loadState() != partFenced {
		p.admitDirect(r.scratch) // runs on; completes as an admitted task
	}
	p.flushDirect()
	p.mu.Unlock()
	d.head = r.directFrom + i
	d.overflow = append([]*sarama.ConsumerMessage(nil), d.overflow[d.head:]...)
	d.head = 0
}
