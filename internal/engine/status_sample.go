package engine

import (
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// This file holds the status page's two hooks into the message path, both
// off the success path: sampleStatus on the dispatcher's lag tick, and
// noteFailure on the failure branch of a delivery.

// sampleStatus records the partition's state for the status page; the
// dispatcher calls it from reportLag, on its tick, with the high watermark
// it just read. It also adds a point to the throughput history when a
// second has passed.
func (d *dispatcher) sampleStatus(hwm int64) {
	m := d.metrics
	if m == nil || m.Board() == nil {
		return
	}
	s, member, gen := d.p.statusSample(hwm)
	s.Paused, s.IntakeBlocked = d.paused, d.blockedBy
	m.Board().PutPartition(s, member, gen)
	m.Board().NoteRate(time.Now(), func() [metricdef.NumResults]uint64 {
		_, processed := m.Totals()
		return processed
	})
}

// statusSample reads the partition's numbers; the dispatcher calls it.
func (p *partition) statusSample(hwm int64) (s telemetry.PartitionSample, member string, gen int32) {
	now := p.clock.read()
	s = telemetry.PartitionSample{Topic: p.topic, Partition: p.id, Tier: p.hop.Tier, EndOffset: hwm, SampledAt: time.Now().UTC()}
	if p.sess != nil {
		member, gen = p.sess.MemberID(), p.sess.GenerationID()
	}
	snap := p.state.Snapshot()
	if snap.Committed >= 0 {
		c := snap.Committed
		s.CommittedOffset = &c
	}
	if snap.Resume >= 0 {
		s.Lag = max(hwm-snap.Resume, 0)
	}
	s.Held, s.InFlight = snap.Held, p.running()
	// The oldest task is read on the dispatcher, the only goroutine that
	// reuses tasks, so it stays what it is while it is read.
	if oldest, ok := p.state.Oldest(); ok {
		off := oldest.msg.Offset
		s.OldestOffset = &off
		age := now - oldest.takenAt
		s.OldestAgeSeconds = age.Seconds()
		s.Stuck = p.stuckAfter > 0 && age >= p.stuckAfter
	}
	if p.hop.Tier > 0 {
		p.mu.Lock()
		s.NextDue = p.nextDue()
		p.mu.Unlock()
	}
	return s, member, gen
}

// nextDue returns the earliest due time of the messages scheduled to wait
// for it, or nil. Only tasks in backingOff are read: their notBefore is
// written by the delivering goroutine before they are put there and after
// they are taken out, both under p.mu. Called with p.mu held, on a retry
// tier's partition only.
func (p *partition) nextDue() *time.Time {
	var next time.Time
	for t := range p.backingOff {
		if !t.notBefore.IsZero() && (next.IsZero() || t.notBefore.Before(next)) {
			next = t.notBefore
		}
	}
	if next.IsZero() {
		return nil
	}
	next = next.UTC()
	return &next
}

// failureOf describes a failed delivery of t for the status page; dest is
// where it goes next, nil for a retry in place.
func failureOf(p *partition, t *task, err error, dest *forward.Destination, at time.Time) telemetry.Failure {
	f := telemetry.Failure{
		Time: at.UTC(), Topic: p.topic, Partition: p.id, Offset: t.msg.Offset, Attempt: t.base + t.attempt,
		ErrorType: handler.ErrorType(err), Error: telemetry.TruncateText(err.Error(), maxErrorText),
		Destination: telemetry.DestinationInPlace,
	}
	switch {
	case dest == nil:
	case dest.DeadLetter:
		f.Destination, f.DestinationTopic = telemetry.DestinationDeadLetter, dest.Topic
	default:
		f.Destination, f.DestinationTopic, f.Tier = telemetry.DestinationRetryTier, dest.Topic, p.hop.Tier+1
	}
	return f
}

// maxErrorText is how many characters of an error's text a failure shows.
const maxErrorText = 200
