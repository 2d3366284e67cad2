// Retry shows what kafkaworker does with a message whose handler fails.
//
// It produces ten payments, each with its own key, to a topic and consumes
// them with a worker whose handler fails on purpose, deciding by
// retry.Attempt(ctx), which counts every delivery of the message so far:
//
//   - payment-01..03 succeed at once;
//   - payment-04..05 fail once and succeed on delivery 2, retried in place
//     (with backoff, holding back only their own key);
//   - payment-06..07 fail until delivery 4: after RetryLocalAttempts (2)
//     deliveries in place they are published to retry tier 1 and handled
//     again from there no earlier than 500ms later;
//   - payment-08 succeeds on delivery 5, from retry tier 2 (1s later);
//   - payment-09 always fails: after both tiers it ends in the dead-letter
//     topic, with kw-attempt 6;
//   - payment-10 returns retry.Permanent(err): dead-lettered after one
//     delivery, no retries.
//
// Every delivery prints a line (when, from which topic, which attempt, the
// outcome), interleaved with the worker's own warnings. Once every payment
// was handled or reached the dead-letter topic, the worker is stopped and a
// summary shows where each one ended, with the kw-* headers of the
// dead-lettered ones, and every delivery's result by topic as the worker's
// Prometheus metrics counted it. The program then verifies, and exits 1 if not, that
// every payment ended exactly once (handled, or dead-lettered), as planned,
// and that the group committed the source topic and both retry tiers up to
// their end offsets: nothing is lost and nothing would be redone.
//
// It needs nothing but Go: with KAFKA_BROKERS unset it starts an embedded
// Kafka-protocol broker on loopback (package kafkatest).
//
//	go run ./examples/retry
//	KAFKA_BROKERS=host:9092 go run ./examples/retry   # run-unique topics and group
//
// The retry settings are set in code (short, so it ends in a few seconds);
// in a deployment they come from RETRY_* and DLQ_* (see worker.Config).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// plan says how the handler treats one payment.
type plan struct {
	key       string
	succeedOn int  // the delivery that succeeds; 0: none does
	permanent bool // fail with retry.Permanent on the first delivery
	what      string
}

var plans = []plan{
	{key: "payment-01", succeedOn: 1, what: "succeeds at once"},
	{key: "payment-02", succeedOn: 1, what: "succeeds at once"},
	{key: "payment-03", succeedOn: 1, what: "succeeds at once"},
	{key: "payment-04", succeedOn: 2, what: "fails once"},
	{key: "payment-05", succeedOn: 2, what: "fails once"},
	{key: "payment-06", succeedOn: 4, what: "fails 3 times"},
	{key: "payment-07", succeedOn: 4, what: "fails 3 times"},
	{key: "payment-08", succeedOn: 5, what: "fails 4 times"},
	{key: "payment-09", what: "always fails"},
	{key: "payment-10", permanent: true, what: "card declined (permanent)"},
}

// gatewayError is the transient failure; its type is what the worker writes
// in kw-error-type.
type gatewayError struct{ attempt int }

func (e *gatewayError) Error() string {
	return fmt.Sprintf("payment gateway timed out (attempt %d)", e.attempt)
}

// outcome is what the handler returns for delivery n of p's payment.
func (p plan) outcome(n int) error {
	switch {
	case p.permanent:
		return retry.Permanent(fmt.Errorf("card of %s declined: insufficient funds", p.key))
	case p.succeedOn == 0 || n < p.succeedOn:
		return &gatewayError{attempt: n}
	}
	return nil
}

// topics are the names the worker derives from its templates.
type topics struct {
	source string
	tiers  []string
	dlq    string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cluster, err := kafkatest.FromEnv()
	if err != nil {
		return err
	}
	defer cluster.Close()

	cfg := worker.DefaultConfig()
	cfg.Brokers = cluster.Addrs()
	cfg.GroupID, cfg.Topics = "retry-demo", []string{"payments"}
	if os.Getenv("KAFKA_BROKERS") != "" { // a real cluster: fresh names every run
		id := fmt.Sprintf("%s-%04x", time.Now().Format("20060102-150405"), rand.N(0x10000))
		cfg.GroupID, cfg.Topics = "retry-demo-"+id, []string{"payments-" + id}
	}
	// The failure flow, short enough to watch: 2 deliveries in place with
	// 50–200ms backoff, then tier 1 (500ms later), then tier 2 (1s later),
	// then the dead-letter topic.
	cfg.RetryLocalAttempts = 2
	cfg.RetryTopicDelays = []time.Duration{500 * time.Millisecond, time.Second}
	cfg.RetryBackoffInitial, cfg.RetryBackoffMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.DLQEnabled, cfg.RetryCreateTopics = true, true
	// One handler at a time, so that each line the worker logs follows the
	// delivery it is about. (Ordering by key still lets a failing payment's
	// retries wait without holding up the others.)
	cfg.Concurrency = 1

	t := topics{source: cfg.Topics[0], dlq: expand(cfg.DLQTopicTemplate, cfg, 0)}
	for n := 1; n <= len(cfg.RetryTopicDelays); n++ {
		t.tiers = append(t.tiers, expand(cfg.RetryTopicTemplate, cfg, n))
	}

	if err := cluster.CreateTopic(ctx, t.source, 3); err != nil {
		return err
	}
	var recs []kafkatest.Record
	for i, p := range plans {
		recs = append(recs, kafkatest.Record{Topic: t.source, Key: []byte(p.key),
			Value: fmt.Appendf(nil, "%s: charge EUR %d.00", p.key, 10*(i+1))})
	}
	if _, err := cluster.Produce(ctx, recs...); err != nil {
		return err
	}
	fmt.Printf("produced %d payments to %s on %s; retry tiers %s; dead-letter topic %s\n\n",
		len(plans), t.source, strings.Join(cluster.Addrs(), ","), strings.Join(t.tiers, ", "), t.dlq)

	start := time.Now()
	byKey := map[string]plan{}
	for _, p := range plans {
		byKey[p.key] = p
	}
	rep := newReport()
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		n := retry.Attempt(ctx) // 1, 2, ... across retry topics too
		err := byKey[string(m.Key)].outcome(n)
		result := "ok"
		if err != nil {
			result = "error: " + err.Error()
		}
		fmt.Printf("%5.2fs  %-28s attempt %d  %-30q %s\n",
			time.Since(start).Seconds(), m.Topic, n, m.Value, result)
		if err == nil {
			rep.handled(string(m.Key), m.Topic, n)
		}
		return err
	})

	// The worker's warnings (retried in place, sent to a retry topic) and
	// errors (dead-lettered), reduced to the telling attributes and
	// indented under the delivery they follow.
	logger := slog.New(slog.NewTextHandler(indented{os.Stdout}, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.LevelKey, slog.MessageKey, "destination", "attempt", "backoff":
				return a
			}
			return slog.Attr{}
		},
	}))
	reg := prometheus.NewRegistry() // the worker's metrics, for the summary
	w, err := worker.New(cfg, h, worker.WithLogger(logger), worker.WithRegisterer(reg))
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(runCtx) }()

	// Wait until every payment was handled or is in the dead-letter topic.
	var dlq []kafkatest.ReadRecord
	for {
		if dlq, err = cluster.ReadAll(ctx, t.dlq); err != nil && ctx.Err() != nil {
			return err
		}
		if rep.finished(dlq) >= len(plans) {
			break
		}
		select {
		case err := <-runDone:
			return fmt.Errorf("worker.Run returned early: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("not every payment reached a final state within a minute")
		case <-time.After(100 * time.Millisecond):
		}
	}
	fmt.Printf("\nevery payment handled or dead-lettered after %.2fs; stopping the worker\n", time.Since(start).Seconds())
	stop() // graceful: drain, commit synchronously, leave the group
	if err := <-runDone; err != nil {
		return fmt.Errorf("worker.Run: %w", err)
	}
	// Read again once stopped, to count exactly what the topic holds.
	if dlq, err = cluster.ReadAll(ctx, t.dlq); err != nil {
		return err
	}
	return rep.summarize(ctx, cluster, cfg, t, dlq, reg)
}

// expand fills a topic template as the worker does.
func expand(template string, cfg worker.Config, n int) string {
	return strings.NewReplacer("{topic}", cfg.Topics[0], "{group}", cfg.GroupID, "{n}", fmt.Sprint(n)).Replace(template)
}

// indented writes each log record (one Write call each) under the handler's
// lines.
type indented struct{ w io.Writer }

func (i indented) Write(p []byte) (int, error) {
	_, err := i.w.Write(append([]byte("        worker: "), p...))
	return len(p), err
}
