package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

// A child is the bench binary re-executed with KAFKAWORKER_BENCH_CHILD set:
// one consumer, alone in its process, reading from the parent's embedded
// broker. Everything the child's process does (its CPU time, its
// allocations, its memory) is the consumer's; the broker's work is all in
// the parent. The child reads its Kafka and worker settings from the usual
// KAFKA_*, WORKER_* and RETRY_* variables through worker.ConfigFromEnv.
const (
	childModeEnv    = "KAFKAWORKER_BENCH_CHILD"        // "worker" or "raw"
	childSleepEnv   = "KAFKAWORKER_BENCH_CHILD_SLEEP"  // handler time, a Go duration; 0 for a no-op handler
	childTargetEnv  = "KAFKAWORKER_BENCH_CHILD_TARGET" // optional: report a result line once this many messages were handled
	childProfileEnv = "KAFKAWORKER_BENCH_CHILD_PROF"   // optional: write <value>.cpu and <value>.allocs profiles
)

// childMain is the child process: a worker (mode "worker") or a raw sarama
// consumer group (mode "raw") configured from the environment, whose
// handler sleeps for KAFKAWORKER_BENCH_CHILD_SLEEP (or does nothing). With
// KAFKAWORKER_BENCH_CHILD_TARGET set it prints a "result" line (see
// childSnapshot) the moment that many messages were handled, and goes on
// consuming. It runs until SIGTERM or an interrupt, then prints how many
// messages it handled and its peak live heap, and returns the exit code.
func childMain(mode string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fail := func(err error) int { fmt.Fprintf(os.Stderr, "bench child (%s): %v\n", mode, err); return 1 }

	sleep, err := time.ParseDuration(os.Getenv(childSleepEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", childSleepEnv, err))
	}
	target, cfg, stopProf, err := childSetup()
	if err != nil {
		return fail(err)
	}
	defer stopProf()
	peakLive := watchLiveHeap(ctx)
	work := func(context.Context, []byte, []byte) {}
	if sleep > 0 {
		work = func(context.Context, []byte, []byte) { time.Sleep(sleep) }
	}
	t := newChildTally(target)
	log := slog.New(joinWatch{next: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), t: t})

	switch mode {
	case "worker":
		h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
			work(ctx, m.Key, m.Value)
			t.add()
			return nil
		})
		if err := runWorker(ctx, cfg, h, log, t); err != nil {
			return fail(err)
		}
	case "raw":
		rh := &rawHandler{work: work, done: t.add, setup: t.join}
		t.begin()
		err := consumeRaw(ctx, cfg.Brokers, cfg.GroupID, cfg.Topics, rh, func(err error) {
			log.Warn("raw sarama consumer group error", slog.Any("error", err))
		})
		if err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("%s=%q: want worker or raw", childModeEnv, mode))
	}
	fmt.Printf("handled=%d\npeaklive=%d\n", t.n.Load(), peakLive())
	return 0
}

// writeAllocsProfile writes the allocation profile (everything allocated
// since the process started, sampled) to path.
func writeAllocsProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
	}
}

// childSnapshot is the state of the child process at one instant.
type childSnapshot struct {
	at      time.Duration // since the consumer was started (Run or Consume called)
	cpu     time.Duration // process CPU time, user + system, every thread
	mallocs uint64        // runtime.MemStats.Mallocs: heap objects allocated, tiny ones included
	bytes   uint64        // runtime.MemStats.TotalAlloc: bytes allocated on the heap
	gcs     uint32        // runtime.MemStats.NumGC: completed GC cycles
}

// The snapshots a child takes, in order: when the consumer is started,
// when its group session starts (joined), at the first handled message and
// at the target-th.
const (
	snapStart  = "start"
	snapJoined = "joined"
	snapFirst  = "first"
	snapLast   = "last"
)

// fields formats s as name.field=value pairs for the result line.
func (s childSnapshot) fields(name string) string {
	return fmt.Sprintf("%[1]s.at=%[2]d %[1]s.cpu=%[3]d %[1]s.mallocs=%[4]d %[1]s.bytes=%[5]d %[1]s.gcs=%[6]d",
		name, int64(s.at), int64(s.cpu), s.mallocs, s.bytes, s.gcs)
}

// snapshotFrom reads snapshot name back from parsed result fields.
func snapshotFrom(f map[string]int64, name string) (childSnapshot, bool) {
	at, ok := f[name+".at"]
	if !ok {
		return childSnapshot{}, false
	}
	return childSnapshot{at: time.Duration(at), cpu: time.Duration(f[name+".cpu"]),
		mallocs: uint64(f[name+".mallocs"]), bytes: uint64(f[name+".bytes"]), gcs: uint32(f[name+".gcs"])}, true
}

// childTally counts handled messages in the child and takes the
// snapshots. add is safe for concurrent use and, between the first and
// the last message, costs one atomic add.
type childTally struct {
	target     int64
	start      time.Time
	zero       childSnapshot
	n          atomic.Int64
	joinOnce   sync.Once
	joined     atomic.Pointer[childSnapshot]
	first      childSnapshot
	firstTaken chan struct{}
}

func newChildTally(target int) *childTally {
	return &childTally{target: int64(target), firstTaken: make(chan struct{})}
}

// begin marks the start: the consumer is started right after.
func (t *childTally) begin() {
	t.start = time.Now()
	t.zero = t.snapshot()
}

func (t *childTally) snapshot() childSnapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return childSnapshot{at: time.Since(t.start), cpu: cpuTime(), mallocs: ms.Mallocs, bytes: ms.TotalAlloc, gcs: ms.NumGC}
}

// join marks the start of the first group session: raw sarama's Setup, the
// worker's "joined consumer group" log record, which its Setup writes.
func (t *childTally) join() {
	if t.target == 0 {
		return
	}
	t.joinOnce.Do(func() {
		s := t.snapshot()
		t.joined.Store(&s)
		fmt.Println("mark " + snapJoined) // the parent notes its own CPU time
	})
}

// add counts one handled message.
func (t *childTally) add() {
	n := t.n.Add(1)
	if t.target == 0 {
		return
	}
	if n == 1 {
		t.first = t.snapshot()
		close(t.firstTaken)
		fmt.Println("mark " + snapFirst)
	}
	if n == t.target {
		last := t.snapshot()
		<-t.firstTaken
		line := fmt.Sprintf("result n=%d %s %s %s", t.target, t.zero.fields(snapStart), t.first.fields(snapFirst), last.fields(snapLast))
		if j := t.joined.Load(); j != nil {
			line += " " + j.fields(snapJoined)
		}
		fmt.Println(line) // one write, which the parent waits for
	}
}

// joinWatch is the worker's log handler in the child: it passes records at
// Warn and above to next, and tells t when the worker logs that it joined.
type joinWatch struct {
	next slog.Handler
	t    *childTally
}

func (h joinWatch) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo
}

func (h joinWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "joined consumer group" {
		h.t.join()
	}
	if r.Level >= slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h joinWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return joinWatch{next: h.next.WithAttrs(as), t: h.t}
}

func (h joinWatch) WithGroup(name string) slog.Handler {
	return joinWatch{next: h.next.WithGroup(name), t: h.t}
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childSpec is one child run as the parent starts it.
type childSpec struct {
	side        string // "worker" or "raw"
	group       string // the consumer group, fresh for each run
	topic       string // consumed topic
	concurrency int    // WORKER_CONCURRENCY
	sleep       time.Duration
	env         []string // more KEY=value settings, e.g. RETRY_TOPIC_DELAYS=
	profile     string   // KAFKAWORKER_BENCH_CHILD_PROF, or ""
	// target > 0: wait for the child to handle that many messages (at most
	// timeout), then for the group's commits to reach the end offsets.
	// target == 0: let the child run for window.
	target  int
	timeout time.Duration
	window  time.Duration
}

// childResult is what one child run measured.
type childResult struct {
	hwm     int64            // VmHWM just before SIGTERM, kB
	rss     int64            // VmRSS just before SIGTERM, kB
	handled int64            // messages the child handled in all
	live    int64            // largest live heap after a GC the child saw, bytes
	result  map[string]int64 // the result line's fields (target > 0)
	// brokerCPU is this (the parent) process's CPU time at each of the
	// child's snapshots, by name: between two of them, nearly all of it is
	// the broker serving the child.
	brokerCPU map[string]time.Duration
	// committed says whether the group's committed offsets reached the
	// topic's end offsets after the result line (target > 0), commitLag
	// how long after the line that was.
	committed bool
	commitLag time.Duration
}

// runChild starts one child consumer, waits for what cs asks (a message
// count or a time window), reads its peak RSS, stops it with SIGTERM and
// returns what it measured.
func (b *bench) runChild(ctx context.Context, cs childSpec) (childResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return childResult{}, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(childEnviron(),
		childModeEnv+"="+cs.side,
		childSleepEnv+"="+cs.sleep.String(),
		"KAFKA_BROKERS="+strings.Join(b.cluster.Addrs(), ","),
		"KAFKA_GROUP_ID="+cs.group,
		"KAFKA_TOPICS="+cs.topic,
		"WORKER_CONCURRENCY="+strconv.Itoa(cs.concurrency),
	)
	if cs.target > 0 {
		cmd.Env = append(cmd.Env, childTargetEnv+"="+strconv.Itoa(cs.target))
	}
	if cs.profile != "" {
		cmd.Env = append(cmd.Env, childProfileEnv+"="+cs.profile)
	}
	cmd.Env = append(cmd.Env, cs.env...)
	out := &lineWriter{results: make(chan string, 1), marks: map[string]time.Duration{}}
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		return childResult{}, fmt.Errorf("start child: %w", err)
	}
	out.mark(snapStart)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	kill := func() { _ = cmd.Process.Kill(); <-waited }

	var r childResult
	if cs.target > 0 {
		timer := time.NewTimer(cs.timeout)
		defer timer.Stop()
		select {
		case line := <-out.results:
			at := time.Now()
			r.result = parseFields(line)
			out.mu.Lock()
			r.brokerCPU = maps.Clone(out.marks)
			out.mu.Unlock()
			r.committed = b.waitCommitted(ctx, cs.group, cs.topic, 10*time.Second)
			r.commitLag = time.Since(at)
		case err := <-waited:
			return childResult{}, fmt.Errorf("%s child exited before handling %d messages: %v", cs.side, cs.target, err)
		case <-timer.C:
			kill()
			return childResult{}, fmt.Errorf("%s child did not handle %d messages in %v", cs.side, cs.target, cs.timeout)
		}
	} else {
		select {
		case err := <-waited:
			return childResult{}, fmt.Errorf("%s child exited early: %v", cs.side, err)
		case <-time.After(cs.window):
		}
	}
	return r, b.stopChild(cmd, cs.side, waited, kill, &r)
}

// stopChild reads the child's memory figures, stops it with SIGTERM and
// reads what it printed on the way out into r.
func (b *bench) stopChild(cmd *exec.Cmd, side string, waited <-chan error, kill func(), r *childResult) error {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		kill()
		return fmt.Errorf("read child status: %w", err)
	}
	r.hwm, r.rss = statusKB(status, "VmHWM"), statusKB(status, "VmRSS")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err = <-waited:
	case <-time.After(time.Minute):
		kill()
		return fmt.Errorf("%s child ignored SIGTERM for a minute; killed", side)
	}
	if err != nil {
		return fmt.Errorf("%s child: %v", side, err)
	}
	f := cmd.Stdout.(*lineWriter).trailer()
	r.handled, r.live = f["handled"], f["peaklive"]
	return nil
}

// lineWriter is a child's stdout: "result ..." lines go to results as they
// arrive, the other lines are kept for trailer. At each "mark <snapshot>"
// line and at the result line it reads this process's CPU time, so the
// broker's CPU time between the child's snapshots is known.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	results chan string
	marks   map[string]time.Duration // this process's CPU time by snapshot name
}

func (w *lineWriter) mark(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.markLocked(name)
}

func (w *lineWriter) markLocked(name string) {
	if _, ok := w.marks[name]; !ok {
		w.marks[name] = cpuTime()
	}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if name, ok := strings.CutPrefix(line, "mark "); ok {
			w.markLocked(name)
			continue
		}
		if rest, ok := strings.CutPrefix(line, "result "); ok {
			w.markLocked(snapLast)
			select {
			case w.results <- rest:
			default: // only the first counts
			}
			continue
		}
		w.lines = append(w.lines, line)
	}
}

// trailer returns the key=value lines the child printed, as numbers.
func (w *lineWriter) trailer() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return parseFields(strings.Join(w.lines, " "))
}

// parseFields parses space- or newline-separated key=value integers.
func parseFields(s string) map[string]int64 {
	m := map[string]int64{}
	for f := range strings.FieldsSeq(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				m[k] = n
			}
		}
	}
	return m
}

// childEnviron is the parent's environment without the variables the
// child's configuration is built from, so only what runChild sets counts.
func childEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KAFKA_") || strings.HasPrefix(k, "WORKER_") || strings.HasPrefix(k, "RETRY_") ||
			strings.HasPrefix(k, "DLQ_") || strings.HasPrefix(k, "METRICS_") || strings.HasPrefix(k, "KAFKAWORKER_BENCH_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// statusKB returns the value in kB of field in a /proc/<pid>/status text,
// or 0 when absent.
func statusKB(status []byte, field string) int64 {
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// watchLiveHeap samples the live heap (as of the last GC) every 50 ms until
// ctx is done, and returns a function reporting the largest value seen.
func watchLiveHeap(ctx context.Context) func() int64 {
	var peak atomic.Int64
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if v := int64(sample[0].Value.Uint64()); v > peak.Load() {
				peak.Store(v)
			}
		}
	}
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				read()
			}
		}
	}()
	return func() int64 { read(); return peak.Load() }
}

// childSetup reads what every child reads from the environment (the
// target count, when set, and the worker's configuration) and starts the
// CPU profile when one is asked for; stop ends it and writes the
// allocation profile beside it.
func childSetup() (target int, cfg worker.Config, stop func(), err error) {
	if v := os.Getenv(childTargetEnv); v != "" {
		if target, err = strconv.Atoi(v); err != nil || target < 1 {
			return 0, cfg, nil, fmt.Errorf("%s=%q: want a positive count", childTargetEnv, v)
		}
	}
	if cfg, err = worker.ConfigFromEnv(); err != nil {
		return 0, cfg, nil, err
	}
	stop = func() {}
	if prof := os.Getenv(childProfileEnv); prof != "" {
		stopProf, err := startCPUProfile(prof + ".cpu")
		if err != nil {
			return 0, cfg, nil, err
		}
		stop = func() { stopProf(); writeAllocsProfile(prof + ".allocs") }
	}
	return target, cfg, stop, nil
}

// runWorker runs a worker child's worker with h until ctx is done, its
// tally starting when Run is called.
func runWorker(ctx context.Context, cfg worker.Config, h handler.Handler, log *slog.Logger, t *childTally) error {
	w, err := worker.New(cfg, h, worker.WithLogger(log))
	if err != nil {
		return err
	}
	t.begin()
	return w.Run(ctx)
}
