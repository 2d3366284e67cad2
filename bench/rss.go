package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

// Environment variables that put the bench binary in child mode for the rss
// scenario. The child reads its Kafka settings from the usual KAFKA_* and
// WORKER_* variables through worker.ConfigFromEnv.
const (
	childModeEnv  = "KAFKAWORKER_BENCH_CHILD"       // "worker" or "raw"
	childSleepEnv = "KAFKAWORKER_BENCH_CHILD_SLEEP" // handler time, a Go duration
)

// rssResult is what one child run measured.
type rssResult struct {
	side    string
	backlog int
	hwm     int64 // VmHWM, kB
	rss     int64 // VmRSS just before SIGTERM, kB
	handled int64 // messages the child handled in the window
	live    int64 // largest live heap after a GC the child saw, bytes
}

// rss measures the peak RSS of a worker, in a child process so nothing of
// the parent (broker, produced data) counts, consuming with a slow handler
// from an empty topic, a 100k and a 1M message backlog. The worker takes at
// most WORKER_MAX_IN_FLIGHT messages per partition from Kafka and pauses the
// partition beyond that, so its memory should not grow with the backlog;
// raw sarama (one message at a time per partition, its own channel buffers)
// is measured the same way for reference.
func (b *bench) rss(ctx context.Context) (table, error) {
	const partitions, keys, concurrency = 8, 1000, 64
	const sleep = time.Millisecond
	small, large, window := 100_000, 1_000_000, 5*time.Second
	if b.quick {
		small, large, window = 100_000, 1_000_000, 2*time.Second
	}
	backlogs := []int{0, small, large}
	topics := map[int]string{}
	for _, n := range backlogs {
		if n == 0 {
			topic := b.name("empty")
			if err := b.cluster.CreateTopic(ctx, topic, partitions); err != nil {
				return table{}, err
			}
			topics[0] = topic
			continue
		}
		topic, err := b.keyedTopic(ctx, partitions, n, keys)
		if err != nil {
			return table{}, err
		}
		topics[n] = topic
	}

	t := table{
		title: fmt.Sprintf("4. Peak RSS of a child process, handler sleeping %s, %d partitions, %s window per run",
			sleep, partitions, window),
		header: []string{"consumer", "backlog", "handled in window", "**peak RSS (VmHWM)**", "RSS at end", "peak live heap", "peak RSS vs empty topic"},
		notes: []string{
			fmt.Sprintf("kafkaworker: key mode, concurrency %d, WORKER_MAX_IN_FLIGHT %d per partition (the default); raw sarama: one message at a time per partition.",
				concurrency, worker.DefaultConfig().MaxInFlight),
			"Each child is the bench binary re-executed in child mode, pointed at the parent's embedded broker through KAFKA_BROKERS; it is stopped with SIGTERM after the window.",
			"Peak live heap is the largest heap left after a GC (runtime/metrics /gc/heap/live:bytes, sampled every 50 ms by the child): what the consumer really holds, without the GC's headroom (GOGC=100 lets the heap grow to twice that before collecting).",
			"Messages are 100 B of random (incompressible) bytes; sarama fetches up to 1 MiB per partition per request and buffers 256 messages per partition channel on both sides.",
		},
	}
	var growth []string
	for _, side := range []string{"worker", "raw"} {
		var base int64
		hwm := map[int]int64{}
		for _, n := range backlogs {
			r, err := b.rssChild(ctx, side, topics[n], concurrency, sleep, window)
			if err != nil {
				return table{}, err
			}
			r.backlog = n
			if n == 0 {
				base = r.hwm
			}
			hwm[n] = r.hwm
			progress("rss %-6s backlog %9s: handled %s, VmHWM %s, VmRSS %s, peak live heap %s",
				side, count(n), count(int(r.handled)), mib(r.hwm), mib(r.rss), mib(r.live/1024))
			name := map[string]string{"worker": fmt.Sprintf("kafkaworker (c=%d)", concurrency), "raw": "raw sarama"}[side]
			t.rows = append(t.rows, []string{
				name, count(n), count(int(r.handled)), mib(r.hwm), mib(r.rss), liveHeap(r.live),
				fmt.Sprintf("%.2f×", float64(r.hwm)/float64(max(base, 1))),
			})
		}
		growth = append(growth, fmt.Sprintf("%s %.2f×", map[string]string{"worker": "kafkaworker", "raw": "raw sarama"}[side],
			float64(hwm[large])/float64(max(hwm[small], 1))))
	}
	t.notes = append([]string{fmt.Sprintf("**Peak RSS with a %s backlog over a %s one: %s** (a consumer that buffered the backlog would show about %d×).",
		count(large), count(small), strings.Join(growth, ", "), large/small)}, t.notes...)
	return t, nil
}

// rssChild runs one child consumer of topic for window, reads its peak RSS,
// stops it with SIGTERM and returns what it measured.
func (b *bench) rssChild(ctx context.Context, side, topic string, concurrency int, sleep, window time.Duration) (rssResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return rssResult{}, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(childEnviron(),
		childModeEnv+"="+side,
		childSleepEnv+"="+sleep.String(),
		"KAFKA_BROKERS="+strings.Join(b.cluster.Addrs(), ","),
		"KAFKA_GROUP_ID="+b.name("rss-"+side),
		"KAFKA_TOPICS="+topic,
		"WORKER_CONCURRENCY="+strconv.Itoa(concurrency),
	)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return rssResult{}, fmt.Errorf("start child: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	select {
	case err := <-waited:
		return rssResult{}, fmt.Errorf("%s child exited early: %v", side, err)
	case <-time.After(window):
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		_ = cmd.Process.Kill()
		<-waited
		return rssResult{}, fmt.Errorf("read child status: %w", err)
	}
	r := rssResult{side: side, hwm: statusKB(status, "VmHWM"), rss: statusKB(status, "VmRSS")}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err = <-waited:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-waited
		return rssResult{}, fmt.Errorf("%s child ignored SIGTERM for a minute; killed", side)
	}
	if err != nil {
		return rssResult{}, fmt.Errorf("%s child: %v", side, err)
	}
	for line := range strings.SplitSeq(stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "handled="); ok {
			r.handled, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "peaklive="); ok {
			r.live, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return r, nil
}

// childEnviron is the parent's environment without the variables the
// child's configuration is built from, so only what rssChild sets counts.
func childEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KAFKA_") || strings.HasPrefix(k, "WORKER_") || strings.HasPrefix(k, "RETRY_") ||
			strings.HasPrefix(k, "KAFKAWORKER_BENCH_") {
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

// liveHeap formats a live heap size in bytes, which is 0 before the first GC.
func liveHeap(b int64) string {
	if b == 0 {
		return "n/a (no GC ran)"
	}
	return mib(b / 1024)
}

// mib formats a kB figure in MiB.
func mib(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

// childMain is the rss scenario's child process: a worker (mode "worker")
// or a raw sarama consumer group (mode "raw") configured from the
// environment, whose handler sleeps for KAFKAWORKER_BENCH_CHILD_SLEEP. It
// runs until SIGTERM or an interrupt, then prints how many messages it
// handled and its peak live heap, and returns the exit code.
func childMain(mode string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fail := func(err error) int { fmt.Fprintf(os.Stderr, "bench child (%s): %v\n", mode, err); return 1 }

	sleep, err := time.ParseDuration(os.Getenv(childSleepEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", childSleepEnv, err))
	}
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		return fail(err)
	}
	var handled atomic.Int64
	peakLive := watchLiveHeap(ctx)
	work := func(context.Context, []byte, []byte) { time.Sleep(sleep) }
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	switch mode {
	case "worker":
		h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
			work(ctx, m.Key, m.Value)
			handled.Add(1)
			return nil
		})
		w, err := worker.New(cfg, h, worker.WithLogger(log))
		if err != nil {
			return fail(err)
		}
		if err := w.Run(ctx); err != nil {
			return fail(err)
		}
	case "raw":
		rh := &rawHandler{work: work, done: func() { handled.Add(1) }}
		err := consumeRaw(ctx, cfg.Brokers, cfg.GroupID, cfg.Topics, rh, func(err error) {
			log.Warn("raw sarama consumer group error", slog.Any("error", err))
		})
		if err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("%s=%q: want worker or raw", childModeEnv, mode))
	}
	fmt.Printf("handled=%d\npeaklive=%d\n", handled.Load(), peakLive())
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
