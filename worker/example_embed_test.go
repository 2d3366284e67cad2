package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// Embedding a worker: configure it (here in code; ConfigFromEnv reads the
// same settings from the environment), give it a handler, run it until the
// context is cancelled. The embedded broker stands in for Kafka.
func Example() {
	ctx := context.Background()
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(ctx, "orders", 2); err != nil {
		panic(err)
	}
	if err := cluster.ProduceN(ctx, "orders", 100, func(i int) ([]byte, []byte) {
		return fmt.Appendf(nil, "customer-%d", i%10), fmt.Appendf(nil, "order-%d", i)
	}); err != nil {
		panic(err)
	}

	cfg := worker.DefaultConfig()
	cfg.Brokers = cluster.Addrs()
	cfg.GroupID = "billing"
	cfg.Topics = []string{"orders"}

	var handled atomic.Int64
	w, err := worker.New(cfg, handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		handled.Add(1) // process the order; an error here would retry it
		return nil
	}), worker.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(runCtx) }()
	for handled.Load() < 100 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()              // drain, commit, leave the group
	fmt.Println(<-done) // Run returns nil after a graceful stop

	committed, _ := cluster.CommittedOffsets(ctx, "billing", "orders")
	fmt.Println("handled:", handled.Load(), "committed:", committed[0]+committed[1])
	// Output:
	// <nil>
	// handled: 100 committed: 100
}
