package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// io compares the worker and raw sarama with a handler that waits 5 ms, as
// a call to a database or an HTTP service would. By Little's law a pool of
// C goroutines each busy L per message sustains at most C/L messages per
// second: 256 / 5 ms = 51,200 msg/s for the worker. Raw sarama handles one
// message at a time per partition, so 4 partitions give 4 / 5 ms = 800
// msg/s. Each side gets a message count that takes it a few seconds, and
// the rates are compared.
func (b *bench) io(ctx context.Context) (table, error) {
	const (
		partitions  = 4
		keys        = 10_000
		concurrency = 256
		latency     = 5 * time.Millisecond
	)
	nWorker, nRaw := 200_000, 4_000
	if b.quick {
		nWorker, nRaw = 20_000, 800
	}
	wTopic, err := b.keyedTopic(ctx, partitions, nWorker, keys)
	if err != nil {
		return table{}, err
	}
	rTopic, err := b.keyedTopic(ctx, partitions, nRaw, keys)
	if err != nil {
		return table{}, err
	}
	// The handler also records how long its sleep really took: timers
	// overshoot, and the ideal with the measured latency is the fairer bar.
	var slept, calls atomic.Int64
	sleep := func(ctx context.Context, _, _ []byte) {
		t0 := time.Now()
		time.Sleep(latency)
		slept.Add(int64(time.Since(t0)))
		calls.Add(1)
	}
	raw := spec{topic: rTopic, n: nRaw, work: sleep, timeout: 2 * time.Minute}
	wrk := spec{topic: wTopic, n: nWorker, work: sleep, concurrency: concurrency, timeout: 2 * time.Minute}
	raws, wrks, err := b.alternate(ctx, "io", raw, wrk)
	if err != nil {
		return table{}, err
	}
	measured := time.Duration(slept.Load() / max(calls.Load(), 1))
	idealW, idealR := float64(concurrency)/latency.Seconds(), float64(partitions)/latency.Seconds()
	idealWm, idealRm := float64(concurrency)/measured.Seconds(), float64(partitions)/measured.Seconds()
	r, w := medianOf(raws, measurement.rate), medianOf(wrks, measurement.rate)
	rs, ws := medianOf(raws, measurement.steadyRate), medianOf(wrks, measurement.steadyRate)
	progress("io: medians raw %s, worker %s msgs/s: worker/ideal %s, raw/ideal %s, worker/raw %s",
		rate(r), rate(w), ratio(w/idealW), ratio(r/idealR), ratio(w/r))
	verdict := "meets"
	if w/idealW < 0.8 {
		verdict = "**below**"
	}
	return table{
		title: fmt.Sprintf("5 ms simulated I/O: %d partitions, %s keys (median of %d alternating runs each)",
			partitions, count(keys), b.repsFor(3)),
		header: []string{"metric", "raw sarama (1 at a time per partition)", fmt.Sprintf("kafkaworker (key, concurrency %d)", concurrency), "worker / raw"},
		rows: [][]string{
			{"messages per run", count(nRaw), count(nWorker), ""},
			{"ideal msgs/s (Little's law, 5 ms)", rate(idealR), rate(idealW), ratio(idealW / idealR)},
			{"**msgs/s** (Run start → all handled)", rate(r), rate(w), fmt.Sprintf("**%s**", ratio(w/r))},
			{"**ratio to ideal**", ratio(r / idealR), fmt.Sprintf("**%s** (target ≥ 0.80: %s)", ratio(w/idealW), verdict), ""},
			{"msgs/s, steady (first → last handled)", rate(rs), rate(ws), ratio(ws / rs)},
			{fmt.Sprintf("steady ratio to ideal with measured sleep (%s)", measured.Round(time.Microsecond)),
				ratio(rs / idealRm), ratio(ws / idealWm), ""},
			{"per-run msgs/s", rates(raws), rates(wrks), ""},
			{"committed offsets reached end offsets", commitSummary(raws), commitSummary(wrks), ""},
		},
		notes: []string{
			"Each side consumes its own topic (same key distribution) with a fresh group per run; rates, not times, are compared.",
			"\"Run start\" rates include connecting and joining the group; the steady rate starts at the first handled message.",
		},
	}, nil
}
