package worker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// Status returns the worker's state as /status.json shows it. It costs
// about what a Prometheus scrape does, and is safe to call at any time,
// also before Run and after it returned.
func (w *Worker) Status() Status {
	now := time.Now()
	board := w.metrics.Board()
	samples, member, gen := board.Partitions()
	parts := make([]PartitionStatus, len(samples))
	for i, s := range samples {
		parts[i] = PartitionStatus(s)
	}
	consumed, processed := w.metrics.Totals()
	board.NoteRate(now, func() [metricdef.NumResults]uint64 { return processed })
	var rates []RatePoint
	for _, r := range board.RateSeries() {
		rates = append(rates, RatePoint(r))
	}
	failures := []FailureStatus{}
	for _, f := range board.RecentFailures() {
		failures = append(failures, FailureStatus(f))
	}
	module, goVersion, saramaVersion := telemetry.Versions()
	st := Status{
		GeneratedAt: now.UTC(),
		Worker: WorkerStatus{
			Group: w.cfg.GroupID, MemberID: member, Generation: gen, ClientID: w.cfg.ClientID,
			Version: module, GoVersion: goVersion, SaramaVersion: saramaVersion,
			StartedAt: board.Started().UTC(), UptimeSeconds: now.Sub(board.Started()).Seconds(),
			StuckAfterSeconds: w.cfg.StuckAfter.Seconds(),
		},
		Throughput: ThroughputStatus{Consumed: consumed, Totals: countsOf(processed),
			WindowSeconds: int(telemetry.RateWindow.Seconds()), Rates: rates},
		Partitions: parts,
		RetryTiers: w.tierStatus(parts),
		Failures:   failures,
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

// countsOf turns per-result totals into DeliveryCounts.
func countsOf(c [metricdef.NumResults]uint64) DeliveryCounts {
	d := DeliveryCounts{Success: c[metricdef.Success], Error: c[metricdef.Error], Retry: c[metricdef.Retry], DeadLetter: c[metricdef.DeadLetter]}
	d.Handled = d.Success + d.Error + d.Retry + d.DeadLetter
	return d
}
