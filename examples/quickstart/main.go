// Quickstart runs a kafkaworker end to end and proves what it promises.
//
// It produces keyed "orders" to a topic, consumes them with a worker whose
// handler simulates 1–5 ms of I/O on 128 goroutines, and fails a few on
// purpose, the same ones every run: about 1% fail once (a timeout) and are
// retried in place, and 0.1% are poison (retry.Permanent) and go to the
// dead-letter topic after one delivery (-flaky and -poison set the shares). It then checks, rather than
// assumes, that
//
//   - every message was handled, or is in the dead-letter topic, exactly once;
//   - each key's messages were handled one at a time, in the order produced,
//     a dead-lettered one no longer holding its key's later ones back;
//   - the committed offsets reached the end of every partition, so a restart
//     would not reprocess anything.
//
// The summary also counts the retried and dead-lettered messages, and
// checks that the worker's Prometheus metrics agree with the handler.
//
// It needs nothing but Go: with KAFKA_BROKERS unset it starts an embedded
// Kafka-protocol broker on loopback (package kafkatest).
//
//	make demo                          # or: go run ./examples/quickstart
//	KAFKA_BROKERS=host:9092 make demo  # against a real cluster
//	go run ./examples/quickstart -messages 100000 -keys 2000 -concurrency 64
//	go run ./examples/quickstart -flaky 0 -poison 0   # no failures
//
// The worker is configured from the environment in both modes
// (worker.ConfigFromEnv: WORKER_*, RETRY_*, DLQ_*, METRICS_ADDR are
// honoured); the quickstart overrides only WORKER_ORDERING (its order check
// needs key ordering) and, when -concurrency is given, WORKER_CONCURRENCY,
// and says so. It prints the live status page's URL (/status on
// METRICS_ADDR, or on a port the kernel picks); -linger 10m keeps serving
// it after the summary.
//
// Live progress goes to stderr once a second; the summary goes to stdout.
// The exit status is non-zero when any check fails. examples/retry shows
// the retry topics and the dead-letter topic message by message.
//
// The files: main.go is the part to copy (a handler and a worker); setup.go
// connects to Kafka and fills the topic; check.go does the bookkeeping that
// proves the guarantees.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

func main() {
	var o options
	flag.IntVar(&o.messages, "messages", 200_000, "messages to produce")
	flag.IntVar(&o.keys, "keys", 1_000, "distinct keys (e.g. customers); each key's messages must be handled in order")
	flag.IntVar(&o.partitions, "partitions", 4, "partitions of the topic the quickstart creates")
	flag.IntVar(&o.concurrency, "concurrency", 128, "handler goroutines")
	flag.IntVar(&o.flakyOneIn, "flaky", 100, "about one message in this many fails once and is retried in place (0: none)")
	flag.IntVar(&o.poisonOneIn, "poison", 1000, "about one message in this many fails for good and is dead-lettered (0: none)")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up if not every message is handled by then")
	flag.DurationVar(&o.linger, "linger", 0, "after the summary, keep serving the status page and metrics this long (e.g. 10m; Ctrl-C ends it)")
	flag.Parse()
	flag.Visit(func(f *flag.Flag) { o.set = append(o.set, f.Name) })
	if o.messages < 1 || o.keys < 1 || o.partitions < 1 || o.concurrency < 1 || o.flakyOneIn < 0 || o.poisonOneIn < 0 {
		fmt.Fprintln(os.Stderr, "quickstart: -messages, -keys, -partitions and -concurrency must be at least 1; -flaky and -poison at least 0")
		os.Exit(2)
	}

	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

type options struct {
	messages, keys, partitions, concurrency int
	flakyOneIn, poisonOneIn                 int
	timeout, linger                         time.Duration
	set                                     []string // the flags given on the command line
}

func run(o options) error {
	// Ctrl-C (or SIGTERM from an orchestrator) cancels ctx, which stops the
	// worker gracefully: it drains, commits and leaves the group.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	// The worker's own logs: warnings and errors only, so the demo output
	// stays readable. Use slog.LevelInfo to see joins, assignments and
	// revocations. Each failed delivery is a warning (an error when
	// dead-lettered): the first two of each kind are shown, the rest
	// counted in the summary.
	logs := newLogTally(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), 2)
	logger := slog.New(logs)

	setupCtx, cancelSetup := context.WithTimeout(ctx, o.timeout)
	env, err := setup(setupCtx, o)
	cancelSetup()
	if err != nil {
		return err
	}
	defer env.cluster.Close()
	if !env.config.DLQEnabled && o.poisonOneIn > 0 {
		fmt.Fprintln(os.Stderr, "DLQ_ENABLED=false: no poison messages this run (they would be retried forever)")
		o.poisonOneIn = 0
	}

	// The handler: this is where your code goes. It gets one message, does
	// its work and returns nil when done; only then does the offset become
	// committable. Messages with the same key are never handled concurrently
	// and arrive in offset order, so no locking per customer is needed.
	//
	// An error is retried: in place with backoff (holding back only that
	// key), then through the retry topics, then the message goes to the
	// dead-letter topic. retry.Permanent(err) skips the retries.
	//
	// The tracker calls are bookkeeping for the checks at the end; a real
	// handler would not have them.
	track := newTracker(env.produced, o.keys, env.runID)
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		end := track.begin(m)
		defer end()

		// Simulated I/O (a database write, an HTTP call) that gives up as
		// soon as ctx is cancelled, which is what a handler must do.
		select {
		case <-time.After(time.Millisecond + rand.N(4*time.Millisecond)):
		case <-ctx.Done():
			return ctx.Err() // not done: the message stays uncommitted
		}

		// Simulated failures. retry.Attempt(ctx) counts the deliveries of
		// this message: 1 the first time, 2 on the first retry, ...
		switch o.fateOf(m.Value) {
		case poison: // no retry can fix it
			return track.failed(m, retry.Permanent(errors.New("order rejected: unknown product")))
		case flaky: // the next delivery gets through
			if retry.Attempt(ctx) == 1 {
				return track.failed(m, errors.New("inventory service timed out"))
			}
		}

		track.handled(m, retry.Attempt(ctx))
		return nil
	})

	cfg := env.config
	applyOverrides(&cfg, o)
	// The worker's Prometheus metrics, on a registry of our own that the
	// summary reads too. The endpoints, with the live status page, are
	// served on METRICS_ADDR, or on a port the kernel picks.
	reg := prometheus.NewRegistry()
	w, err := worker.New(cfg, h, worker.WithLogger(logger), worker.WithRegisterer(reg), worker.WithHTTPServer(false))
	if err != nil {
		return err
	}
	addr := cfg.MetricsAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: w.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Fprintf(os.Stderr, "status:  http://%s/status (live page; -linger 10m keeps it up after the summary)\n", hostPort(ln.Addr()))
	fmt.Fprintf(os.Stderr, "metrics: http://%s/metrics (also /status.json, /healthz, /readyz)\n", hostPort(ln.Addr()))
	fmt.Fprintf(os.Stderr, "consuming with group %s: concurrency %d, ordering by %s; %s\n",
		cfg.GroupID, cfg.Concurrency, cfg.Ordering, failureRates(o))

	// Run blocks until its context is cancelled, so it gets a goroutine and
	// a context of its own; Ctrl-C cancels it too.
	runCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	runDone := make(chan error, 1)
	start := time.Now()
	go func() { runDone <- w.Run(runCtx) }()

	stopProgress := track.reportProgress(os.Stderr, start)
	var why error // why the wait ended early, if it did
	giveUp := time.After(o.timeout)
	select {
	case <-track.allFinal:
		// Every message was handled or failed for good; wait for the latter
		// to reach the dead-letter topic (the worker publishes them and
		// then commits their offsets).
		_, _, poisoned := track.soFar()
		waitCtx, cancelWait := context.WithTimeout(ctx, 30*time.Second)
		why = waitDeadLettered(waitCtx, env, poisoned)
		cancelWait()
	case err := <-runDone:
		// Run returns on its own only when it cannot start (brokers
		// unreachable) or the group fails for good.
		stopProgress()
		return fmt.Errorf("the worker stopped before handling everything: %v", err)
	case <-ctx.Done():
		why = errors.New("FAIL: interrupted before every message was handled")
		stopSignals() // a second Ctrl-C now kills the process at once
		fmt.Fprintln(os.Stderr, "stopping gracefully (drain, commit, leave); Ctrl-C again to quit at once")
	case <-giveUp:
		why = fmt.Errorf("FAIL: not every message was handled within -timeout %v", o.timeout)
	}
	handledIn := time.Since(start)
	stopProgress()

	// Graceful stop: cancel Run's context and wait for Run to return. By
	// then the running handlers have finished and their offsets have been
	// committed synchronously, so reading the committed offsets below is
	// not racing a background commit.
	stopping := time.Now()
	stopWorker()
	select {
	case err := <-runDone:
		if err != nil {
			return fmt.Errorf("worker.Run: %w", err)
		}
	case <-time.After(cfg.ShutdownTimeout + 30*time.Second):
		return fmt.Errorf("worker.Run did not return within %v of cancellation", cfg.ShutdownTimeout+30*time.Second)
	}
	stoppedIn := time.Since(stopping)

	// ctx may be cancelled already (Ctrl-C): the offsets are read anyway.
	offCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	offsets, err := readOffsets(offCtx, env)
	if err != nil {
		return err
	}
	dead, otherDead, err := readDeadLetters(offCtx, env)
	if err != nil {
		return err
	}

	failed := track.summary(os.Stdout, summaryInput{
		offsets: offsets, deadLetters: dead, otherDeadLetters: otherDead, dlqTopic: env.dlqTopic,
		logs: logs.counts(), metrics: readMetrics(reg), concurrency: cfg.Concurrency,
		handledIn: handledIn, stoppedIn: stoppedIn,
	})
	linger(o.linger, ln.Addr())
	switch {
	case why != nil:
		return why
	case failed > 0:
		return fmt.Errorf("FAIL: %d check(s) failed; see the summary above", failed)
	}
	return nil
}
