package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"time"
)

// noopSizes returns the noop scenario's message count: the same with
// -quick, since producing and consuming it takes seconds, and a smaller
// count leaves a hot window of a few milliseconds.
func (b *bench) noopSizes() int { return 1_000_000 }

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
	start := time.Now()
	err := b.produceKeyed(ctx, topic, n, keys)
	if err != nil {
		return "", err
	}
	progress("produced %s messages (100 B, %d keys) to %s (%d partitions) in %s",
		count(n), keys, topic, partitions, dur(time.Since(start)))
	b.topics[desc] = topic
	return topic, nil
}

// produceKeyed produces n messages of 100 bytes to topic, keyed at random
// (fixed seed) among keys keys. Values are 100-byte windows at random
// places in 1 MiB of random bytes: incompressible, like real payloads. (A
// repeated value would let the producer's compression pack a hundred
// thousand records into one 1 MiB fetch, which inflates every consumer's
// memory and flatters its throughput.) The producer only reads them, so
// sharing is fine.
func (b *bench) produceKeyed(ctx context.Context, topic string, n, keys int) error {
	keyBytes := make([][]byte, keys)
	for i := range keyBytes {
		keyBytes[i] = fmt.Appendf(nil, "key-%06d", i)
	}
	rng := rand.New(rand.NewPCG(uint64(n), uint64(keys)))
	noise := make([]byte, 1<<20)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	return b.cluster.ProduceN(ctx, topic, n, func(int) ([]byte, []byte) {
		off := rng.IntN(len(noise) - 100)
		return keyBytes[rng.IntN(keys)], noise[off : off+100 : off+100]
	})
}

// noop compares raw sarama and the worker with a handler that does
// nothing, so what is measured is each side's own cost per message: for raw
// sarama a channel receive and MarkMessage, for the worker also the
// per-key FIFO, the in-flight ring, the shared goroutine pool, the
// handler.Message copy, the metrics and the commit bookkeeping.
//
// Each consumer runs in a child process of its own (see child.go) against
// the broker in this process, so the child's process CPU time and its
// runtime.MemStats allocation counters are the consumer's and nothing
// else's: no attribution is needed. The child snapshots them in the
// handler at the first and at the last message; the difference over the
// n−1 messages between is the hot path, without connecting, joining and
// the worker's start-up (retry topics, second client).
func (b *bench) noop(ctx context.Context) (table, error) {
	const partitions, keys, concurrency = 8, 1000, 64
	n, reps := b.noopSizes(), b.repsFor(5)
	topic, err := b.keyedTopic(ctx, partitions, n, keys)
	if err != nil {
		return table{}, err
	}
	runs, err := b.alternateChildren(ctx, "noop", topic, n, concurrency, reps, rawVariant, workerVariant)
	if err != nil {
		return table{}, err
	}
	raws, wrks := runs[0], runs[1]
	med := func(f func(measurement) float64) (r, w, ratio float64) {
		r, w = medianOf(raws, f), medianOf(wrks, f)
		return r, w, div(w, r)
	}
	hot := func(f func(window) float64) func(measurement) float64 { return in(snapFirst, f) }
	hr, hw, hq := med(hot(window.rate))
	wr, ww, wq := med(in(snapStart, window.rate))
	cr, cw, cq := med(hot(window.cpuPerMsg))
	cwr, cww, cwq := med(in(snapStart, window.cpuPerMsg))
	ar, aw, aq := med(hot(window.allocsPerMsg))
	br, bw, bq := med(hot(window.bytesPerMsg))
	gr, gw, _ := med(hot(func(w window) float64 { return float64(w.gcs) }))
	kr, kw, kq := med(hot(window.brokerPerMsg))
	mr, mw, mq := med(byHWM)
	jr, jw, _ := med(sinceAt(snapFirst))
	b.noopHWM = map[string]float64{rawVariant.tag: mr, workerVariant.tag: mw}
	progress("noop: medians raw %s, worker %s msgs/s (hot path): worker/raw %s; CPU/msg %s; allocs/msg %s; B/msg %s",
		rate(hr), rate(hw), ratio(hq), ratio(cq), ratio(aq), ratio(bq))
	return table{
		title: fmt.Sprintf("No-op handler: %s msgs × 100 B, %d partitions, %d keys, each consumer alone in a child process (median of %d alternating runs each)",
			count(n), partitions, keys, reps),
		header: []string{"metric", "raw sarama", fmt.Sprintf("kafkaworker (key, concurrency %d)", concurrency), "worker / raw"},
		rows: [][]string{
			{"**msgs/s, hot path** (first → last message handled)", rate(hr), rate(hw), atLeast(hq, 0.92)},
			{"msgs/s, whole run (Run/Consume called → last handled)", rate(wr), rate(ww), ratio(wq)},
			{"per-run hot-path msgs/s", windowRates(raws, snapFirst), windowRates(wrks, snapFirst), ""},
			{"**consumer CPU per message**, hot path", micros(secs(cr)), micros(secs(cw)), atMost(cq, 1.1)},
			{"consumer CPU per message, whole run", micros(secs(cwr)), micros(secs(cww)), ratio(cwq)},
			{"**allocations per message**, hot path", fmt.Sprintf("%.2f", ar), fmt.Sprintf("%.2f", aw), atMost(aq, 1.10)},
			{"**bytes allocated per message**, hot path", fmt.Sprintf("%.0f B", br), fmt.Sprintf("%.0f B", bw), atMost(bq, 1.10)},
			{"GC cycles in the hot path", fmt.Sprintf("%.0f", gr), fmt.Sprintf("%.0f", gw), ""},
			{"broker (parent process) CPU per message, hot path", micros(secs(kr)), micros(secs(kw)), ratio(kq)},
			{"consumer peak RSS (VmHWM)", mib(int64(mr)), mib(int64(mw)), ratio(mq)},
			{"Run/Consume called → first message (connect, join, set-up)", dur(secs(jr)), dur(secs(jw)), ""},
			{"committed offsets reached end offsets", commitSummary(raws), commitSummary(wrks), ""},
		},
		notes: append([]string{
			"**How the consumer's cost is told from the broker's:** each run is the bench binary re-executed as a child process that holds only the consumer; the kfake broker stays in the parent, and the child reaches it through KAFKA_BROKERS on loopback. " +
				"So the child's process CPU time (getrusage: user + system, all its threads: sarama's goroutines, the worker's, the GC) and its heap counters (runtime.MemStats Mallocs and TotalAlloc, tiny objects included) are the consumer's alone, exactly: no sampling, no subtraction. " +
				"The child snapshots them and its clock in the handler at the first message and at the last; **hot path** figures are the differences, over the n−1 messages in between. " +
				"Connecting, joining the group and the worker's start-up (checking and creating its retry topics, its second client) come before the first message, so only the whole-run rows include them.",
			"A consumer in its own process also has its own heap, as in production, so its GC runs at the pace its own allocations set: in one process with the broker, the broker's heap (the produced topics) made the consumer's GCs rare and hid part of its allocation cost.",
			"The broker row is the parent's CPU time between the child's first and last message (the parent does nothing else meanwhile), for reference: it is in neither side's consumer CPU. Where it is well below the consumer's, the consumer, not the broker, sets the rate. " +
				"The two processes share the machine's CPUs (GOMAXPROCS each as the machine's), so the rates also depend on how the OS schedules them, and are noisier than the CPU and allocation figures, which do not.",
		}, settingsNotes(concurrency, false)...),
	}, nil
}

// settingsNotes says what each side runs with and what they share.
func settingsNotes(concurrency int, noRetryToo bool) []string {
	notes := []string{rawSettingsNote(), workerSettingsNote(benchWorkerConfig(concurrency, false))}
	if noRetryToo {
		notes = append(notes, "kafkaworker, no retry topics: the same with RETRY_TOPIC_DELAYS set empty, so it consumes the source topic only, as raw sarama does (the dead-letter topic is still created, and only produced to on failure).")
	}
	return append(notes, fmt.Sprintf("Both: the same topic, a fresh group each run, the same binary and Go runtime settings (GOMAXPROCS=%d, GOGC %s); runs alternate between the sides. "+
		"The parent waits (via kadm) for the group's committed offsets to reach the end offsets before stopping the child with SIGTERM; that wait is in no rate.",
		runtime.GOMAXPROCS(0), gogc()))
}

// gogc describes the GOGC setting children inherit.
func gogc() string {
	if v := os.Getenv("GOGC"); v != "" {
		return v
	}
	return "100 (default)"
}
