package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// noopSizes returns the noop scenario's message count.
func (b *bench) noopSizes() int {
	if b.quick {
		return 100_000
	}
	return 1_000_000
}

// keyedTopic returns a topic of n messages of 100 bytes over the given
// number of partitions, keyed at random (fixed seed) among keys keys,
// producing it the first time it is asked for.
func (b *bench) keyedTopic(ctx context.Context, partitions int32, n, keys int) (string, error) {
	desc := fmt.Sprintf("p%d-n%d-k%d", partitions, n, keys)
	if t, ok := b.topics[desc]; ok {
		return t, nil
	}
	topic := b.name(desc)
	if err := b.cluster.CreateTopic(ctx, topic, partitions); err != nil {
		return "", err
	}
	keyBytes := make([][]byte, keys)
	for i := range keyBytes {
		keyBytes[i] = fmt.Appendf(nil, "key-%06d", i)
	}
	// Values are 100-byte windows at random places in 1 MiB of random
	// bytes: incompressible, like real payloads. (A repeated value would
	// let the producer's compression pack a hundred thousand records into
	// one 1 MiB fetch, which inflates every consumer's memory and flatters
	// its throughput.) The producer only reads them, so sharing is fine.
	rng := rand.New(rand.NewPCG(uint64(n), uint64(keys)))
	noise := make([]byte, 1<<20)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	start := time.Now()
	err := b.cluster.ProduceN(ctx, topic, n, func(int) ([]byte, []byte) {
		off := rng.IntN(len(noise) - 100)
		return keyBytes[rng.IntN(keys)], noise[off : off+100 : off+100]
	})
	if err != nil {
		return "", err
	}
	progress("produced %s messages (100 B, %d keys) to %s (%d partitions) in %s",
		count(n), keys, topic, partitions, dur(time.Since(start)))
	b.topics[desc] = topic
	return topic, nil
}

// noop compares raw sarama and the worker with a handler that does
// nothing, so what is measured is each side's own overhead per message:
// for raw sarama a channel receive and MarkMessage, for the worker also the
// per-key FIFO, the in-flight ring, the shared goroutine pool and the
// handler.Message copy.
func (b *bench) noop(ctx context.Context) (table, error) {
	const partitions, keys, concurrency = 8, 1000, 64
	n := b.noopSizes()
	topic, err := b.keyedTopic(ctx, partitions, n, keys)
	if err != nil {
		return table{}, err
	}
	nothing := func(context.Context, []byte, []byte) {}
	s := spec{topic: topic, n: n, work: nothing, concurrency: concurrency, timeout: 5 * time.Minute}
	raws, wrks, err := b.alternate(ctx, "noop", s, s)
	if err != nil {
		return table{}, err
	}
	r, w := medianOf(raws, measurement.rate), medianOf(wrks, measurement.rate)
	rs, ws := medianOf(raws, measurement.steadyRate), medianOf(wrks, measurement.steadyRate)
	rj := medianOf(raws, func(m measurement) float64 { return m.startup.Seconds() })
	wj := medianOf(wrks, func(m measurement) float64 { return m.startup.Seconds() })
	rc := medianOf(raws, func(m measurement) float64 { return m.cpuPerMillion().Seconds() })
	wc := medianOf(wrks, func(m measurement) float64 { return m.cpuPerMillion().Seconds() })
	progress("noop: medians raw %s, worker %s msgs/s: worker/raw %s (steady %s)", rate(r), rate(w), ratio(w/r), ratio(ws/rs))
	verdict := "meets"
	if w/r < 0.9 {
		verdict = "**below**"
	}
	return table{
		title: fmt.Sprintf("1. No-op handler: %s msgs × 100 B, %d partitions, %d keys (median of %d alternating runs each)",
			count(n), partitions, keys, b.reps),
		header: []string{"metric", "raw sarama", fmt.Sprintf("kafkaworker (key, concurrency %d)", concurrency), "worker / raw"},
		rows: [][]string{
			{"**msgs/s** (Run start → all handled)", rate(r), rate(w), fmt.Sprintf("**%s** (target ≥ 0.90: %s)", ratio(w/r), verdict)},
			{"msgs/s, steady (first → last handled)", rate(rs), rate(ws), ratio(ws / rs)},
			{"per-run msgs/s", rates(raws), rates(wrks), ""},
			{"process CPU per 1M msgs (consumer + broker)", dur(secs(rc)), dur(secs(wc)), ratio(wc / rc)},
			{"start → first message (join)", dur(secs(rj)), dur(secs(wj)), ""},
			{"committed offsets reached end offsets", commitSummary(raws), commitSummary(wrks), ""},
		},
		notes: []string{
			"Both sides use the same sarama settings (oldest, sticky, auto-commit 1s, Return.Errors) and read the same topic, each run with a fresh group.",
			"Rates are counted in the handler: from the Run/Consume call until the N-th message was handled; afterwards the bench checks that the group's committed offsets reach the end offsets (via kadm).",
			"The broker runs in the same process and shares the CPUs with the consumer under test.",
		},
	}, nil
}

// secs converts seconds to a time.Duration.
func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
