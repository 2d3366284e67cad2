package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

// workerConfig is a worker of group on topic against the test cluster,
// tuned for fast tests: no retry tiers, one delivery before a message is
// dead-lettered, frequent commits.
func (e *env) workerConfig(group, topic string) worker.Config {
	c := worker.DefaultConfig()
	c.Brokers = e.cluster.Addrs()
	c.GroupID = group
	c.Topics = []string{topic}
	c.ClientID = "test-worker"
	c.SessionTimeout, c.HeartbeatInterval = 3*time.Second, 500*time.Millisecond
	c.RebalanceTimeout = 10 * time.Second
	c.CommitInterval = 50 * time.Millisecond
	c.ShutdownTimeout = 2 * time.Second
	c.RetryLocalAttempts = 1
	c.RetryBackoffInitial, c.RetryBackoffMax = 10*time.Millisecond, 50*time.Millisecond
	c.RetryTopicDelays = nil
	return c
}

// runningWorker is a worker started in the background.
type runningWorker struct {
	cancel context.CancelFunc
	done   chan error
}

// startWorker runs a real worker until stop or the end of the test.
func (e *env) startWorker(cfg worker.Config, h handler.HandlerFunc) *runningWorker {
	e.t.Helper()
	w, err := worker.New(cfg, h, worker.WithHTTPServer(false), worker.WithRegisterer(prometheus.NewRegistry()),
		worker.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		e.t.Fatalf("worker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningWorker{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels the worker and waits for Run to return.
func (r *runningWorker) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("worker Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop within 30s")
	}
}

// sum adds a map's values.
func sum(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
