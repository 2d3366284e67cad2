package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"syscall"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The output scenario's child: mode outputChildMode of childModeEnv, a
// worker whose handler emits one record per input to the topic named by
// childOutputEnv.
const (
	outputChildMode = "output"
	childOutputEnv  = "KAFKAWORKER_BENCH_CHILD_OUTPUT"
)

var (
	// outputALOVariant and outputEOSVariant are the worker with a
	// one-output handler, at-least-once (the default) and exactly-once.
	outputALOVariant = variant{name: "at-least-once", tag: "output-alo", side: outputChildMode}
	outputEOSVariant = variant{name: "exactly-once (WORKER_EXACTLY_ONCE=true)", tag: "output-eos", side: outputChildMode,
		env: []string{"WORKER_EXACTLY_ONCE=true"}}
)

// outputChildMain is the child process of the output scenario: childMain's
// worker, whose handler does nothing but worker.Produce one record (the
// input's key and value) to the topic named by KAFKAWORKER_BENCH_CHILD_OUTPUT.
// It counts a message when Handle returns, snapshots and prints like
// childMain, and runs until SIGTERM.
func outputChildMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fail := func(err error) int { fmt.Fprintf(os.Stderr, "bench child (%s): %v\n", outputChildMode, err); return 1 }

	out := os.Getenv(childOutputEnv)
	if out == "" {
		return fail(fmt.Errorf("%s is not set: name the output topic", childOutputEnv))
	}
	target, cfg, stopProf, err := childSetup()
	if err != nil {
		return fail(err)
	}
	defer stopProf()
	peakLive := watchLiveHeap(ctx)
	t := newChildTally(target)
	log := slog.New(joinWatch{next: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), t: t})
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if err := worker.Produce(ctx, &producer.Message{Topic: out, Key: m.Key, Value: m.Value}); err != nil {
			return err
		}
		t.add()
		return nil
	})
	if err := runWorker(ctx, cfg, h, log, t); err != nil {
		return fail(err)
	}
	fmt.Printf("handled=%d\npeaklive=%d\n", t.n.Load(), peakLive())
	return 0
}

// outputCheck is what the output topic of one run held.
type outputCheck struct {
	committed int  // records a read_committed consumer sees
	written   int  // records in the log, read_uncommitted (aborted ones included)
	markers   int  // transaction markers: the end offsets' sum less the records
	exact     bool // the committed records are the inputs' (key, value) pairs, each as often as in the input
}

// output measures what exactly-once costs: a worker whose handler emits one
// output record per input through worker.Produce, at-least-once against
// WORKER_EXACTLY_ONCE=true (one transaction per commit interval holding the
// outputs and the source offsets), each in a child process as in noop,
// alternating, each run with a fresh group and a fresh output topic.
func (b *bench) output(ctx context.Context) (table, error) {
	const partitions, keys, concurrency = 8, 1000, 64
	n, reps := 200_000, b.repsFor(3)
	if b.quick {
		n = 50_000
	}
	topic, err := b.keyedTopic(ctx, partitions, n, keys)
	if err != nil {
		return table{}, err
	}
	inputs, err := b.cluster.ReadAll(ctx, topic)
	if err != nil {
		return table{}, err
	}
	want := map[string]int{}
	for _, r := range inputs {
		want[string(r.Key)+"\x00"+string(r.Value)]++
	}

	variants := []variant{outputALOVariant, outputEOSVariant}
	runs := make([][]measurement, len(variants))
	checks := make([][]outputCheck, len(variants))
	for i := range reps {
		for j, v := range variants {
			out := b.name("output-" + v.tag)
			if err := b.cluster.CreateTopic(ctx, out, partitions); err != nil {
				return table{}, err
			}
			rv := v
			rv.env = append(slices.Clone(v.env), childOutputEnv+"="+out)
			m, err := b.childRun(ctx, "output", i+1, rv, topic, n, concurrency)
			if err != nil {
				return table{}, fmt.Errorf("%s: %w", v.name, err)
			}
			c, err := b.checkOutput(ctx, out, want)
			if err != nil {
				return table{}, fmt.Errorf("%s: output topic: %w", v.name, err)
			}
			if err := b.cluster.DeleteTopic(ctx, out); err != nil {
				progress("output: delete %s: %v", out, err)
			}
			h := m.window(snapFirst)
			progress("output run %d/%d %-10s: hot %s msgs/s, until committed %s msgs/s, CPU %s/msg (broker %s/msg), %.2f allocs/msg, peak RSS %s, "+
				"committed %v after +%s; output: %d read_committed, %d written, %d markers, each input once: %v",
				i+1, reps, v.tag, rate(h.rate()), rate(untilCommitted(m)), micros(secs(h.cpuPerMsg())), micros(secs(h.brokerPerMsg())),
				h.allocsPerMsg(), mib(m.hwm), m.committed, dur(m.commitLag), c.committed, c.written, c.markers, c.exact)
			runs[j] = append(runs[j], m)
			checks[j] = append(checks[j], c)
		}
	}

	alo, eos := runs[0], runs[1]
	med := func(f func(measurement) float64) (a, e, r float64) {
		a, e = medianOf(alo, f), medianOf(eos, f)
		return a, e, div(e, a)
	}
	hot := func(f func(window) float64) func(measurement) float64 { return in(snapFirst, f) }
	ha, he, hq := med(hot(window.rate))
	ua, ue, uq := med(untilCommitted)
	wa, we, wq := med(in(snapStart, window.rate))
	ca, ce, cq := med(hot(window.cpuPerMsg))
	cwa, cwe, cwq := med(in(snapStart, window.cpuPerMsg))
	aa, ae, aq := med(hot(window.allocsPerMsg))
	ka, ke, kq := med(hot(window.brokerPerMsg))
	ma, me, mq := med(byHWM)
	la, le, _ := med(func(m measurement) float64 { return m.commitLag.Seconds() })
	progress("output: medians at-least-once %s, exactly-once %s msgs/s (hot path): exactly-once / at-least-once %s; until committed %s; CPU/msg %s",
		rate(ha), rate(he), ratio(hq), ratio(uq), ratio(cq))
	cfg := benchWorkerConfig(concurrency, false)
	us := func(v float64) string { return micros(secs(v)) }
	var warn []string
	if slices.ContainsFunc(checks[1], func(c outputCheck) bool { return c.markers == 0 }) {
		// Without markers nothing was written in a transaction: the
		// worker ignored WORKER_EXACTLY_ONCE, and the ratios compare
		// at-least-once with itself.
		warn = append(warn, "**Exactly-once was not in effect**: a WORKER_EXACTLY_ONCE=true run left no transaction marker in its output topic, so its output was not written in transactions and the ratios above compare at-least-once with itself.")
		progress("output: WARNING: an exactly-once run wrote no transaction marker: exactly-once was not in effect")
	}
	return table{
		title: fmt.Sprintf("Exactly-once cost: a handler that emits one output per input (worker.Produce), %s msgs × 100 B, %d partitions, %d keys, each worker alone in a child process (median of %d alternating runs each)",
			count(n), partitions, keys, reps),
		header: []string{"metric", outputALOVariant.name, outputEOSVariant.name, "exactly-once / at-least-once"},
		rows: [][]string{
			{"**msgs/s, hot path** (first → last message handled)", rate(ha), rate(he), atLeast(hq, 0.8)},
			{"**msgs/s until committed** (first handled → offsets committed to the end)", rate(ua), rate(ue), atLeast(uq, 0.8)},
			{"msgs/s, whole run (Run called → last handled)", rate(wa), rate(we), ratio(wq)},
			{"per-run hot-path msgs/s", windowRates(alo, snapFirst), windowRates(eos, snapFirst), ""},
			{"**worker CPU per message**, hot path", us(ca), us(ce), ratio(cq)},
			{"worker CPU per message, whole run", us(cwa), us(cwe), ratio(cwq)},
			{"allocations per message, hot path", fmt.Sprintf("%.2f", aa), fmt.Sprintf("%.2f", ae), ratio(aq)},
			{"broker (parent process) CPU per message, hot path", us(ka), us(ke), ratio(kq)},
			{"worker peak RSS (VmHWM)", mib(int64(ma)), mib(int64(me)), ratio(mq)},
			{"last handled → offsets committed to the end (median)", dur(secs(la)), dur(secs(le)), ""},
			{"committed offsets reached end offsets", commitSummary(alo), commitSummary(eos), ""},
			{"**output topic holds each input once** (read_committed)", outputSummary(checks[0], n), outputSummary(checks[1], n), ""},
			{"transaction markers in the output topic (per run)", markerCounts(checks[0]), markerCounts(checks[1]), ""},
		},
		notes: append(append(warn,
			"Both sides are the same worker and handler: `worker.Produce` of one record (the input's key and value) to an output topic of its own per run (8 partitions), sent once Handle returned. "+
				"At-least-once, the worker's producer (package producer: idempotent, murmur2 keyed partitioning, with its metrics and a span per send) sends it, and a message is done (its offset committable, its key's next message free to start) once its output is acknowledged; "+
				"exactly-once, the output goes into the open transaction (a sarama transactional producer of its own) and the message is done once it is handed over: the transaction's commit waits for the acknowledgements, and a failed record aborts the transaction. "+
				"That is why exactly-once can be the faster here: a key's next message does not wait for a round trip to the broker. The handler counts a message when it returns, before its output is sent, so the hot-path rate leaves out the sending of the last messages' output; "+
				"the until-committed rate runs to the moment the parent (polling every 20 ms) saw the group's committed offsets reach the end offsets, so it includes the sending, the last commit interval's wait and, exactly-once, the last transaction's commit.",
			fmt.Sprintf("Exactly-once: WORKER_EXACTLY_ONCE=true, the worker's consumer reads read_committed and it commits one Kafka transaction per commit interval (%v) holding that interval's outputs and the source offsets. "+
				"The output check reads the output topic back from its log: read_committed, each transaction's outcome from its marker (kafkatest.ReadCommitted); each input once means the records read are the inputs' (key, value) pairs, each as often as in the input. "+
				"Transaction markers are the output's end offsets summed less its records: 0 at-least-once, one per partition written per committed transaction exactly-once.", cfg.CommitInterval),
			"How each side's cost is told from the broker's, and the snapshots: as in the no-op table (each worker alone in a child process; CPU is getrusage of the child, the broker's is the parent's).",
			workerSettingsNote(cfg)),
			fmt.Sprintf("Both: the same source topic, a fresh group and output topic each run, GOMAXPROCS=%d for each process; runs alternate between the sides, at-least-once first.", runtime.GOMAXPROCS(0))),
	}, nil
}

// checkOutput reads out back and compares it with the inputs (want: each
// input's key and value, with how often it occurs).
func (b *bench) checkOutput(ctx context.Context, out string, want map[string]int) (outputCheck, error) {
	committed, err := b.cluster.ReadCommitted(ctx, out)
	if err != nil {
		return outputCheck{}, err
	}
	all, err := b.cluster.ReadAll(ctx, out)
	if err != nil {
		return outputCheck{}, err
	}
	end, err := b.cluster.EndOffsets(ctx, out)
	if err != nil {
		return outputCheck{}, err
	}
	var total int64
	for _, e := range end {
		total += e
	}
	got := make(map[string]int, len(want))
	for _, r := range committed {
		got[string(r.Key)+"\x00"+string(r.Value)]++
	}
	return outputCheck{committed: len(committed), written: len(all), markers: int(total) - len(all), exact: maps.Equal(got, want)}, nil
}

// untilCommitted is the rate from the first handled message until the
// parent saw the group's commits reach the end offsets, for medianOf.
func untilCommitted(m measurement) float64 {
	w := m.window(snapFirst)
	if !w.ok || !m.committed {
		return 0
	}
	return div(w.msgs, (w.d + m.commitLag).Seconds())
}

// outputSummary says whether every run's output topic held each input
// exactly once.
func outputSummary(cs []outputCheck, n int) string {
	for _, c := range cs {
		if !c.exact {
			return fmt.Sprintf("**no**: %d read_committed, %d written, want %s (see stderr)", c.committed, c.written, count(n))
		}
	}
	aborted := 0
	for _, c := range cs {
		aborted += c.written - c.committed
	}
	return fmt.Sprintf("yes, every run: %s records, %d aborted", count(n), aborted)
}

// markerCounts lists each run's transaction markers.
func markerCounts(cs []outputCheck) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = strconv.Itoa(c.markers)
	}
	return fmt.Sprint(s)
}
