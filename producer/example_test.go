package producer_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/producer"
)

// Sending synchronously: each Send waits for the broker's
// acknowledgement. Records of one key land on one partition, in order.
// The embedded broker stands in for Kafka; FromEnv reads the same
// settings from KAFKA_BROKERS and the other KAFKA_* variables.
func ExampleProducer_Send() {
	ctx := context.Background()
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(ctx, "orders", 3); err != nil {
		panic(err)
	}

	cfg := producer.DefaultConfig()
	cfg.Brokers = cluster.Addrs()
	p, err := producer.New(cfg, producer.WithLogger(slog.New(slog.DiscardHandler)), producer.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		panic(err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = p.Close(closeCtx) // flushes, within the deadline
	}()

	for i := range 3 {
		partition, offset, err := p.Send(ctx, &producer.Message{
			Topic:   "orders",
			Key:     []byte("customer-7"),
			Value:   fmt.Appendf(nil, "order-%d", i),
			Headers: []handler.Header{{Key: "source", Value: []byte("checkout")}},
		})
		if err != nil {
			panic(err) // a *producer.SendError: errors.Is(err, producer.ErrClosed), sarama's KErrors, ...
		}
		fmt.Printf("order-%d: partition %d offset %d\n", i, partition, offset)
	}
	// Output:
	// order-0: partition 1 offset 0
	// order-1: partition 1 offset 1
	// order-2: partition 1 offset 2
}

// Sending asynchronously: SendAsync hands the record over and returns; the
// callback runs once per record with where it landed or why it failed.
// Close flushes what is still buffered.
func ExampleProducer_SendAsync() {
	ctx := context.Background()
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(ctx, "clicks", 4); err != nil {
		panic(err)
	}

	cfg := producer.DefaultConfig()
	cfg.Brokers = cluster.Addrs()
	p, err := producer.New(cfg, producer.WithLogger(slog.New(slog.DiscardHandler)), producer.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		panic(err)
	}

	var (
		mu           sync.Mutex
		acked, fails int
	)
	for i := range 1000 {
		p.SendAsync(ctx, &producer.Message{Topic: "clicks", Key: fmt.Appendf(nil, "user-%d", i%50), Value: []byte("click")},
			func(partition int32, offset int64, err error) { // quick: it runs on the producer's completion goroutine
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fails++
					return
				}
				acked++
			})
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Close(closeCtx); err != nil { // every callback has run when Close returns nil
		panic(err)
	}
	fmt.Println("acknowledged:", acked, "failed:", fails)
	// Output:
	// acknowledged: 1000 failed: 0
}
