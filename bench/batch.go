package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// batch compares the worker with a single-message Handler (worker.New) and
// with a BatchHandler (worker.NewBatch) on a handler whose cost is that of
// a bulk database write: a fixed 2 ms per call plus 10 µs per message, one
// sleep per call. A Handler pays 2.01 ms for every message, so a pool of C
// goroutines sustains at most C / 2.01 ms (64 → 31,841 msg/s). A batch of
// 100 costs 3 ms, 30 µs a message: the handler-bound ideal of the batch
// side, C × 100 / 3 ms (2.1M msg/s), is beyond what one small machine
// moves, so the ratio says how much of the bulk write's saving the worker
// passes on. The BatchHandler runs with the defaults (WORKER_BATCH_MAX=100,
// WORKER_BATCH_WAIT=100ms) and again with a 10 ms wait, which shows what the
// wait costs a backlog. Raw sarama with the single-message cost (one
// message at a time per partition: partitions / 2.01 ms) is there for
// reference.
//
// Everything runs in this process, as io does: each side consumes its own
// topic of the same shape (partitions, keys, 100-byte values) sized to take
// it a few seconds, with a fresh group per run, alternating, and the rates
// are compared.
func (b *bench) batch(ctx context.Context) (table, error) {
	const (
		partitions  = 8
		keys        = 10_000
		concurrency = 64
		batchMax    = 100 // WORKER_BATCH_MAX's default
		perCall     = 2 * time.Millisecond
		perMsg      = 10 * time.Microsecond
	)
	nRaw, nSingle, nBatch := 8_000, 100_000, 1_000_000
	if b.quick {
		nRaw, nSingle, nBatch = 2_000, 20_000, 200_000
	}
	vs := []*batchSide{
		{name: "raw sarama (1 at a time per partition)", tag: "raw", raw: true, n: nRaw},
		{name: fmt.Sprintf("kafkaworker, Handler (concurrency %d)", concurrency), tag: "Handler", n: nSingle},
		{name: fmt.Sprintf("kafkaworker, BatchHandler, defaults (WORKER_BATCH_MAX=%d, WORKER_BATCH_WAIT=100ms)", batchMax), tag: "Batch", batch: true, n: nBatch},
		{name: "kafkaworker, BatchHandler, WORKER_BATCH_WAIT=10ms", tag: "Batch-10ms", batch: true, wait: 10 * time.Millisecond, n: nBatch},
	}
	for _, v := range vs {
		topic, err := b.keyedTopic(ctx, partitions, v.n, keys)
		if err != nil {
			return table{}, err
		}
		s := spec{topic: topic, n: v.n, concurrency: concurrency, timeout: 2 * time.Minute}
		if v.batch {
			s.batch, s.batchMax, s.batchWait = v.bulkWrite(perCall, perMsg, batchMax), batchMax, v.wait
		} else {
			s.work = func(context.Context, []byte, []byte) { v.sleep(perCall+perMsg, 1, batchMax) }
		}
		v.spec = s
	}

	reps := b.repsFor(3)
	for i := range reps {
		for _, v := range vs {
			calls0, msgs0 := v.calls.Load(), v.msgs.Load()
			var m measurement
			var err error
			if v.raw {
				m, err = b.runRaw(ctx, v.spec)
			} else {
				m, err = b.runWorker(ctx, v.spec)
			}
			if err != nil {
				return table{}, fmt.Errorf("%s: %w", v.tag, err)
			}
			size := div(float64(v.msgs.Load()-msgs0), float64(v.calls.Load()-calls0))
			v.sizes = append(v.sizes, size)
			progress("batch run %d/%d %-10s: %s msgs in %s = %s msgs/s (join %s, steady %s msgs/s, process CPU (consumer + broker) %s/msg, mean batch %.1f, commit at end: %v after +%s)",
				i+1, reps, v.tag, count(m.n), dur(m.total), rate(m.rate()), dur(m.startup),
				rate(m.steadyRate()), micros(m.cpuPerMillion()/1e6), size, m.committed, dur(m.commitLag))
			v.ms = append(v.ms, m)
		}
	}

	single := vs[1]
	callSingle, callFull := perCall+perMsg, perCall+batchMax*perMsg
	cols := func(f func(v *batchSide) string) []string {
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = f(v)
		}
		return out
	}
	row := func(label string, f func(v *batchSide) string) []string {
		return append([]string{label}, cols(f)...)
	}
	toSingle := func(f func(measurement) float64, bold bool) func(v *batchSide) string {
		return func(v *batchSide) string {
			q := medianOf(v.ms, f) / medianOf(single.ms, f)
			switch {
			case v == single:
				return "1"
			case v.batch && bold:
				return atLeast(q, 20)
			}
			return ratio(q)
		}
	}
	for _, v := range vs[2:] {
		progress("batch: %s: %s msgs/s, %s× the Handler's %s (steady %s×), mean batch %.1f",
			v.tag, rate(medianOf(v.ms, measurement.rate)), ratio(medianOf(v.ms, measurement.rate)/medianOf(single.ms, measurement.rate)),
			rate(medianOf(single.ms, measurement.rate)),
			ratio(medianOf(v.ms, measurement.steadyRate)/medianOf(single.ms, measurement.steadyRate)), v.meanSize())
	}
	return table{
		title: fmt.Sprintf("Batch handler, a bulk write of 2 ms per call + 10 µs per message: %d partitions, %s keys, key order, concurrency %d (median of %d alternating runs each)",
			partitions, count(keys), concurrency, reps),
		header: append([]string{"metric"}, cols(func(v *batchSide) string { return v.name })...),
		rows: [][]string{
			row("messages per run", func(v *batchSide) string { return count(v.n) }),
			row("handler-bound ideal msgs/s", func(v *batchSide) string {
				switch {
				case v.raw:
					return rate(partitions / callSingle.Seconds())
				case v.batch:
					return rate(concurrency*batchMax/callFull.Seconds()) + " (full batches; beyond the machine)"
				}
				return rate(concurrency / callSingle.Seconds())
			}),
			row("**msgs/s** (Run start → all handled)", func(v *batchSide) string { return rate(medianOf(v.ms, measurement.rate)) }),
			row("**ratio to the Handler**", toSingle(measurement.rate, true)),
			row("msgs/s, steady (first → last handled)", func(v *batchSide) string { return rate(medianOf(v.ms, measurement.steadyRate)) }),
			row("steady ratio to the Handler", toSingle(measurement.steadyRate, false)),
			row("per-run msgs/s", func(v *batchSide) string { return rates(v.ms) }),
			row("steady ratio to the handler-bound ideal (measured call time, observed batch size)", func(v *batchSide) string {
				ideal := float64(concurrency) * v.meanSize() / v.mean().Seconds()
				if v.raw {
					ideal = float64(partitions) / v.mean().Seconds()
				}
				return ratio(medianOf(v.ms, measurement.steadyRate) / ideal)
			}),
			row("**messages per handler call** (mean; per run)", func(v *batchSide) string {
				if !v.batch {
					return "1"
				}
				return fmt.Sprintf("**%.1f**; %s; %.0f%% of calls full", v.meanSize(), means(v.sizes), 100*div(float64(v.full.Load()), float64(v.calls.Load())))
			}),
			row("handler time per call, measured (mean)", func(v *batchSide) string { return v.mean().Round(time.Microsecond).String() }),
			row("process CPU per message (consumer + broker, whole run)", func(v *batchSide) string {
				return micros(time.Duration(medianOf(v.ms, func(m measurement) float64 { return float64(m.cpuPerMillion()) }) / 1e6))
			}),
			row("committed offsets reached end offsets", func(v *batchSide) string { return commitSummary(v.ms) }),
		},
		notes: []string{
			"The Handler pays the bulk write's fixed 2 ms for every message; the BatchHandler pays it once per call, 30 µs a message in a full batch of 100. " +
				"The ideal for full batches is beyond one machine: the batch sides' rates are what the worker and the broker (both in this process) deliver, and the steady ratio to the ideal says how far the pool is from kept busy.",
			"Each side consumes its own topic (same partitions, key distribution and 100-byte values) with a fresh group per run, with WORKER_MAX_IN_FLIGHT at its default; rates, not times, are compared. The sides alternate in the order of the columns.",
			"\"Run start\" rates include connecting and joining the group; the steady rate starts at the first handled message. Process CPU is this process's (the broker's share included) from Run start to the last message.",
		},
	}, nil
}

// batchSide is one column of the batch scenario: a consumer and what its
// handler measured.
type batchSide struct {
	name, tag  string
	raw, batch bool
	wait       time.Duration // WORKER_BATCH_WAIT; 0: the default
	n          int
	spec       spec
	ms         []measurement
	sizes      []float64 // mean batch size of each run

	calls, slept, msgs, full atomic.Int64
}

// sleep sleeps d for a call of n messages, and records how long it really
// took (timers overshoot, by the call, not by the message) and the call's
// size.
func (v *batchSide) sleep(d time.Duration, n, max int) {
	t0 := time.Now()
	time.Sleep(d)
	v.slept.Add(int64(time.Since(t0)))
	v.calls.Add(1)
	v.msgs.Add(int64(n))
	if n == max {
		v.full.Add(1)
	}
}

// bulkWrite is the batch handler's work: one sleep of perCall + perMsg per
// message.
func (v *batchSide) bulkWrite(perCall, perMsg time.Duration, max int) batchFunc {
	return func(_ context.Context, msgs []*handler.Message) {
		v.sleep(perCall+time.Duration(len(msgs))*perMsg, len(msgs), max)
	}
}

// mean is the mean measured call time.
func (v *batchSide) mean() time.Duration {
	return time.Duration(v.slept.Load() / max(v.calls.Load(), 1))
}

// meanSize is the mean number of messages per call over every run.
func (v *batchSide) meanSize() float64 {
	return div(float64(v.msgs.Load()), float64(v.calls.Load()))
}

// means lists per-run mean batch sizes.
func means(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}
