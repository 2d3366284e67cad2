// Command bench measures kafkaworker side by side with a raw sarama consumer
// group against the embedded broker (kafkatest), and prints Markdown tables
// of rates and ratios. The machine it runs on is usually shared and noisy,
// so the ratios (measured in the same run, alternating the sides) matter
// more than the absolute numbers.
//
//	make bench                         # everything: go run ./bench
//	make bench ARGS=-quick             # one run per side, smaller counts: a smoke test (about 2 minutes)
//	make bench ARGS="-only=noop"       # pick scenarios: noop, partitions, io, batch, keys, rss, output, scaleout
//	go run ./bench -only=noop -cpuprofile=cpu.out
//	go tool pprof cpu.out.noop.worker.1.cpu      # a child run's CPU profile (.allocs: its allocations)
//	go tool pprof -tagfocus=side=kafkaworker cpu.out   # in-process scenarios (io, batch, keys): the worker's share
//
// Progress goes to stderr, the tables to stdout.
//
// Scenarios:
//
//   - noop: a no-op handler, 8 partitions; raw sarama (MarkMessage per
//     message) against the worker in key mode, each consumer alone in a
//     child process so that its CPU time and allocations are its own
//     (child.go); medians of alternating runs.
//   - partitions: the same on 256 partitions, with the worker also without
//     retry topics: throughput and peak RSS by partition count.
//   - io: a 5 ms handler; the worker against Little's law (concurrency /
//     latency) and against raw sarama (one message at a time per partition).
//   - batch: a bulk write costing 2 ms per call + 10 µs per message, 8
//     partitions, 10,000 keys, concurrency 64: the worker with a Handler
//     (2.01 ms per message) against the worker with a BatchHandler
//     (worker.NewBatch, batches of up to 100), raw sarama for reference;
//     in process, alternating: msgs/s, their ratio (target ≥ 20×), the
//     mean batch size (batch.go).
//   - keys: one partition, 0–5 ms random handler, wall time by key count.
//   - rss: peak RSS of a worker (and a raw sarama consumer) in a child
//     process against a 100k and a 1M message backlog.
//   - output: a handler that emits one output per input (worker.Produce),
//     8 partitions, 200k messages; at-least-once against
//     WORKER_EXACTLY_ONCE=true, each in a child process, alternating:
//     throughput and CPU per message of each, their ratio (target ≥ 0.8),
//     and a read_committed check that the output holds each input once.
//   - scaleout: N = 1, 2, 3 worker processes in one group on 12 partitions
//     with a 5 ms handler: throughput and scaling; then 3 with one SIGKILLed
//     mid-run: nothing lost, duplicates within what it had not committed
//     (scaleout.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// allScenarios lists the scenarios in the order they run.
var allScenarios = []string{"noop", "partitions", "io", "batch", "keys", "rss", "output", "scaleout"}

// bench is what every scenario shares: the embedded broker, the run's
// settings and the topics produced so far.
type bench struct {
	cluster *kafkatest.Cluster
	quick   bool
	reps    int // -reps; 0 for each scenario's default (see repsFor)
	seq     atomic.Int64
	// topics caches produced topics by a description of their content, so
	// scenarios that need the same data (noop and rss) produce it once.
	topics map[string]string
	// cpuprofile is the -cpuprofile path; child runs write theirs next to it.
	cpuprofile string
	// noopHWM is the noop scenario's median peak RSS (kB) by variant tag,
	// which the partitions scenario compares with; nil when noop did not run.
	noopHWM map[string]float64
}

// table is one Markdown table of results, with notes printed under it.
type table struct {
	title  string
	header []string
	rows   [][]string
	notes  []string
}

var started = time.Now()

// progress prints a timestamped progress line to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	if mode := os.Getenv(childModeEnv); mode == outputChildMode {
		os.Exit(outputChildMain())
	} else if mode == scaleoutChildMode {
		os.Exit(scaleoutChildMain())
	} else if mode != "" {
		os.Exit(childMain(mode))
	}
	quick := flag.Bool("quick", false, "smaller message counts and one run per side: a smoke test")
	only := flag.String("only", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", "))
	reps := flag.Int("reps", 0, "runs per side where medians are taken (default 5 for noop, 3 elsewhere; 1 with -quick)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (the broker, and the io and keys consumers) to this file, "+
		"and each child run's CPU and allocation profiles to FILE.<scenario>.<consumer>.<run>.{cpu,allocs}")
	flag.Parse()

	selected, err := parseOnly(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer stop()
	}
	if err := run(selected, *quick, *reps, *cpuprofile, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseOnly checks the -only list against the known scenarios and returns
// them in run order.
func parseOnly(only string) ([]string, error) {
	var out []string
	for s := range strings.SplitSeq(only, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("-only: unknown scenario %q: use some of %s", s, strings.Join(allScenarios, ","))
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-only: no scenario given")
	}
	slices.SortFunc(out, func(a, b string) int {
		return slices.Index(allScenarios, a) - slices.Index(allScenarios, b)
	})
	return slices.Compact(out), nil
}

// startCPUProfile starts profiling into path and returns the function that
// stops it and closes the file.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// run starts the embedded broker, runs the selected scenarios and prints
// their tables to out.
func run(selected []string, quick bool, reps int, cpuprofile string, out io.Writer) error {
	// sarama and kfake log nothing by default; keep any slog.Default user
	// (none expected) quiet too.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		return err
	}
	defer cluster.Close()
	b := &bench{cluster: cluster, quick: quick, reps: reps, topics: map[string]string{}, cpuprofile: cpuprofile}
	repsDesc := "each scenario's default"
	if reps > 0 {
		repsDesc = fmt.Sprint(reps)
	} else if quick {
		repsDesc = "1"
	}
	progress("embedded broker at %v; GOMAXPROCS=%d; quick=%v; runs per side: %s; scenarios %v",
		cluster.Addrs(), runtime.GOMAXPROCS(0), quick, repsDesc, selected)

	ctx := context.Background()
	var tables []table
	for _, s := range selected {
		var t table
		switch s {
		case "noop":
			t, err = b.noop(ctx)
		case "partitions":
			t, err = b.partitions(ctx)
		case "io":
			t, err = b.io(ctx)
		case "batch":
			t, err = b.batch(ctx)
		case "keys":
			t, err = b.keys(ctx)
		case "rss":
			t, err = b.rss(ctx)
		case "output":
			t, err = b.output(ctx)
		case "scaleout":
			t, err = b.scaleout(ctx)
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", s, err)
		}
		tables = append(tables, t)
	}
	fmt.Fprintf(out, "# kafkaworker vs raw sarama (embedded kfake broker, %s, GOMAXPROCS=%d, %s)\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), map[bool]string{true: "-quick", false: "full run"}[quick])
	for i, t := range tables {
		t.title = fmt.Sprintf("%d. %s", i+1, t.title)
		t.render(out)
	}
	progress("done")
	return nil
}

// repsFor returns how many runs per side a scenario whose default is def
// makes: -reps when given, 1 with -quick, else def.
func (b *bench) repsFor(def int) int {
	switch {
	case b.reps > 0:
		return b.reps
	case b.quick:
		return 1
	}
	return def
}

// name returns a unique topic or group name for what.
func (b *bench) name(what string) string {
	return fmt.Sprintf("bench-%s-%d-%d", what, started.UnixNano()%1e6, b.seq.Add(1))
}

// render writes t as a Markdown table, then its notes.
func (t table) render(w io.Writer) {
	fmt.Fprintf(w, "## %s\n\n", t.title)
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.header, " | "))
	seps := make([]string, len(t.header))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(seps, " | "))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range t.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	fmt.Fprintln(w)
}

// rate formats a msgs/s figure.
func rate(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// ratio formats a dimensionless ratio.
func ratio(v float64) string { return fmt.Sprintf("%.2f", v) }

// dur formats a duration to milliseconds, or seconds above ten.
func dur(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// count formats a message count with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
