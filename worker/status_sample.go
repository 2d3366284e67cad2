package worker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// This file holds the status page's two hooks into the message path, both
// off the success path: sampleStatus on the dispatcher's lag tick, and
// noteFailure on the failure branch of a delivery.

// sampleStatus records the partition's state for the status page; the
// dispatcher calls it from reportLag, on its tick, with the high watermark
// it just read. It also adds a point to the throughput history when a
// second has passed.
func (d *dispatcher) sampleStatus(hwm int64) {
	m := d.g.metrics
	if m == nil || m.board == nil {
		return
	}
	s, member, gen := d.p.statusSample(hwm)
	s.Paused, s.IntakeBlocked = d.paused, d.blockedBy
	m.board.putPartition(s, member, gen)
	m.board.noteRate(time.Now(), m.processedTotals)
}

// statusSample reads the partition's numbers; the dispatcher calls it.
func (p *partition) statusSample(hwm int64) (s PartitionStatus, member string, gen int32) {
	now := p.clock.read()
	s = PartitionStatus{Topic: p.topic, Partition: p.id, Tier: p.hop.tier, EndOffset: hwm, SampledAt: time.Now().UTC()}
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
	s.Held, s.InFlight = snap.Held, p.pool.runningIn(p)
	// The oldest task is read on the dispatcher, the only goroutine that
	// reuses tasks, so it stays what it is while it is read.
	if oldest, ok := p.state.Oldest(); ok {
		off := oldest.msg.Offset
		s.OldestOffset = &off
		age := now - oldest.takenAt
		s.OldestAgeSeconds = age.Seconds()
		s.Stuck = p.stuckAfter > 0 && age >= p.stuckAfter
	}
	if p.hop.tier > 0 {
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

// noteFailure records a failed delivery of t for the status page; dest is
// where it goes next, nil for a retry in place. Only the failure branch of
// handle calls it.
func (m *metrics) noteFailure(p *partition, t *task, err error, dest *destination, at time.Time) {
	if m == nil || m.board == nil {
		return
	}
	m.board.addFailure(failureOf(p, t, err, dest, at))
}

// processedTotals sums this worker's deliveries by outcome.
func (m *metrics) processedTotals() [metricdef.NumResults]uint64 {
	_, processed := m.deliveries.groupTotals(m.group)
	return processed
}

// Status returns the worker's state as /status.json shows it. It costs
// about what a Prometheus scrape does, and is safe to call at any time,
// also before Run and after it returned.
func (w *Worker) Status() Status {
	now := time.Now()
	parts, member, gen := w.metrics.board.partitions()
	consumed, processed := w.metrics.deliveries.groupTotals(w.cfg.GroupID)
	w.metrics.board.noteRate(now, func() [metricdef.NumResults]uint64 { return processed })
	module, goVersion, saramaVersion := versions()
	st := Status{
		GeneratedAt: now.UTC(),
		Worker: WorkerStatus{
			Group: w.cfg.GroupID, MemberID: member, Generation: gen, ClientID: w.cfg.ClientID,
			Version: module, GoVersion: goVersion, SaramaVersion: saramaVersion,
			StartedAt: w.metrics.board.started.UTC(), UptimeSeconds: now.Sub(w.metrics.board.started).Seconds(),
			StuckAfterSeconds: w.cfg.StuckAfter.Seconds(),
		},
		Throughput: ThroughputStatus{Consumed: consumed, Totals: countsOf(processed),
			WindowSeconds: int(rateWindow.Seconds()), Rates: w.metrics.board.rateSeries()},
		Partitions: parts,
		RetryTiers: w.tierStatus(parts),
		Failures:   w.metrics.board.recentFailures(),
		Config:     configEntries(w.cfg),
	}
	st.Worker.Ready, st.Worker.ReadyReason = w.health.readiness(now)
	st.Worker.Healthy, st.Worker.HealthyReason = w.health.liveness(now)
	return st
}

// tierStatus adds up the sampled tier partitions, tier by tier.
func (w *Worker) tierStatus(parts []PartitionStatus) []TierStatus {
	out := []TierStatus{}
	for _, src := range w.cfg.Topics {
		for n, delay := range w.cfg.RetryTopicDelays {
			ts := TierStatus{Source: src, Tier: n + 1, Topic: w.cfg.RetryTopic(src, n+1), DelaySeconds: delay.Seconds()}
			for _, p := range parts {
				if p.Topic != ts.Topic {
					continue
				}
				ts.AssignedPartitions++
				ts.Waiting += p.Lag
				ts.Held += p.Held
				if p.NextDue != nil && (ts.NextDue == nil || p.NextDue.Before(*ts.NextDue)) {
					ts.NextDue = p.NextDue
				}
			}
			out = append(out, ts)
		}
	}
	return out
}

// configEntries flattens Config.LogValue, the allow-list, in its order.
func configEntries(c Config) []ConfigEntry {
	var out []ConfigEntry
	var walk func(prefix string, attrs []slog.Attr)
	walk = func(prefix string, attrs []slog.Attr) {
		for _, a := range attrs {
			v := a.Value.Resolve()
			if v.Kind() == slog.KindGroup {
				walk(prefix+a.Key+".", v.Group())
				continue
			}
			out = append(out, ConfigEntry{Name: prefix + a.Key, Value: fmt.Sprint(v.Any())})
		}
	}
	walk("", c.LogValue().Group())
	return out
}
