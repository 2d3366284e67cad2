// Quickstart runs a kafkaworker end to end and proves what it promises.
//
// It produces keyed "orders" to a topic, consumes them with a worker whose
// handler simulates 1–5 ms of I/O on 128 goroutines, and then checks, rather
// than assumes, that
//
//   - every message was handled,
//   - each key's messages were handled one at a time, in the order produced,
//   - the committed offsets reached the end of every partition, so a restart
//     would not reprocess anything.
//
// It needs nothing but Go: with KAFKA_BROKERS unset it starts an embedded
// Kafka-protocol broker on loopback (package kafkatest).
//
//	make demo                          # or: go run ./examples/quickstart
//	KAFKA_BROKERS=host:9092 make demo  # against a real cluster
//	go run ./examples/quickstart -messages 100000 -keys 2000 -concurrency 64
//
// Live progress goes to stderr once a second; the summary goes to stdout.
// The exit status is non-zero when any check fails.
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
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

func main() {
	var o options
	flag.IntVar(&o.messages, "messages", 200_000, "messages to produce")
	flag.IntVar(&o.keys, "keys", 1_000, "distinct keys (e.g. customers); each key's messages must be handled in order")
	flag.IntVar(&o.partitions, "partitions", 4, "partitions of the topic the quickstart creates")
	flag.IntVar(&o.concurrency, "concurrency", 128, "handler goroutines")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up if not every message is handled by then")
	flag.Parse()
	if o.messages < 1 || o.keys < 1 || o.partitions < 1 || o.concurrency < 1 {
		fmt.Fprintln(os.Stderr, "quickstart: -messages, -keys, -partitions and -concurrency must be at least 1")
		os.Exit(2)
	}

	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

type options struct {
	messages, keys, partitions, concurrency int
	timeout                                 time.Duration
}

func run(o options) error {
	// Ctrl-C (or SIGTERM from an orchestrator) cancels ctx, which stops the
	// worker gracefully: it drains, commits and leaves the group.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	// The worker's own logs: warnings and errors only, so the demo output
	// stays readable. Use slog.LevelInfo to see joins, assignments and
	// revocations.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	setupCtx, cancelSetup := context.WithTimeout(ctx, o.timeout)
	env, err := setup(setupCtx, o)
	cancelSetup()
	if err != nil {
		return err
	}
	defer env.cluster.Close()

	// The handler: this is where your code goes. It gets one message, does
	// its work and returns nil when done; only then does the offset become
	// committable. Messages with the same key are never handled concurrently
	// and arrive in offset order, so no locking per customer is needed.
	//
	// The tracker calls are bookkeeping for the checks at the end; a real
	// handler would not have them.
	track := newTracker(env.produced, env.runID)
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

		track.handled(m)
		return nil
	})

	cfg := env.config
	cfg.Concurrency = o.concurrency
	cfg.Ordering = worker.OrderByKey // the default, spelled out
	w, err := worker.New(cfg, h, worker.WithLogger(logger))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "consuming with group %s: concurrency %d, ordering by %s\n", cfg.GroupID, cfg.Concurrency, cfg.Ordering)

	// Run blocks until its context is cancelled, so it gets a goroutine and
	// a context of its own; Ctrl-C cancels it too.
	runCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	runDone := make(chan error, 1)
	start := time.Now()
	go func() { runDone <- w.Run(runCtx) }()

	stopProgress := track.reportProgress(os.Stderr, start)
	var why error // why the wait ended early, if it did
	select {
	case <-track.allHandled:
	case err := <-runDone:
		// Run returns on its own only when it cannot start (brokers
		// unreachable) or the group fails for good.
		stopProgress()
		return fmt.Errorf("the worker stopped before handling everything: %v", err)
	case <-ctx.Done():
		why = errors.New("FAIL: interrupted before every message was handled")
		stopSignals() // a second Ctrl-C now kills the process at once
		fmt.Fprintln(os.Stderr, "stopping gracefully (drain, commit, leave); Ctrl-C again to quit at once")
	case <-time.After(o.timeout):
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

	failed := track.summary(os.Stdout, summaryInput{
		offsets: offsets, concurrency: cfg.Concurrency,
		handledIn: handledIn, stoppedIn: stoppedIn,
	})
	switch {
	case why != nil:
		return why
	case failed > 0:
		return fmt.Errorf("FAIL: %d check(s) failed; see the summary above", failed)
	}
	return nil
}
