// Produce sends records with package producer, both ways: synchronously,
// each Send waiting for the broker's acknowledgement, and asynchronously,
// every record handed over at once and a callback per record counting
// the outcomes; then it closes the producer within a deadline, which
// flushes what is still buffered.
//
//	KAFKA_BROKERS=localhost:9092 go run ./examples/produce -topic orders -n 1000
//
// The producer reads the worker's KAFKA_* variables (TLS and SASL
// included) and never creates topics: create the topic first. Without
// KAFKA_BROKERS the example starts the embedded broker and creates the
// topic there.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/producer"
)

func main() {
	topic := flag.String("topic", "orders", "topic to produce to (it must exist)")
	n := flag.Int("n", 1000, "records to send asynchronously (and a tenth of that synchronously)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *topic, *n); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, topic string, n int) error {
	if os.Getenv("KAFKA_BROKERS") == "" && os.Getenv("KAFKA_BOOTSTRAP_SERVERS") == "" {
		cluster, err := kafkatest.NewCluster()
		if err != nil {
			return err
		}
		defer cluster.Close()
		if err := cluster.CreateTopic(ctx, topic, 4); err != nil {
			return err
		}
		os.Setenv("KAFKA_BROKERS", cluster.Addrs()[0])
		log.Printf("KAFKA_BROKERS is not set: using the embedded broker at %s", cluster.Addrs()[0])
	}

	p, err := producer.FromEnv() // KAFKA_BROKERS, KAFKA_CLIENT_ID, KAFKA_TLS_*, KAFKA_SASL_*, ...
	if err != nil {
		return err // names every offending variable and what to do
	}
	defer func() {
		// Close flushes what is buffered; past the deadline the sends still
		// unacknowledged fail with producer.ErrCloseDeadline.
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(closeCtx); err != nil {
			log.Print(err)
		}
	}()

	if err := sendSync(ctx, p, topic, max(n/10, 1)); err != nil {
		return err
	}
	return sendAsync(ctx, p, topic, n)
}

// sendSync sends one record at a time, each acknowledged before the next:
// simple, and the place to start; a request handler that must know its
// record is stored does this.
func sendSync(ctx context.Context, p *producer.Producer, topic string, n int) error {
	start := time.Now()
	for i := range n {
		partition, offset, err := p.Send(ctx, &producer.Message{
			Topic:   topic,
			Key:     fmt.Appendf(nil, "customer-%d", i%10), // one customer's records stay in order on one partition
			Value:   fmt.Appendf(nil, "order-%d", i),
			Headers: []handler.Header{{Key: "source", Value: []byte("examples/produce")}},
		})
		var se *producer.SendError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("record %d: %w", i, err) // says what failed and, where it can, what to do
		case err != nil:
			return err
		}
		if i < 3 {
			log.Printf("sync: order-%d is at %s/%d offset %d", i, topic, partition, offset)
		}
	}
	log.Printf("sync: %d records acknowledged one by one in %v", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// sendAsync hands every record over without waiting; sarama batches them,
// and the callback (which must be quick) runs once per record.
func sendAsync(ctx context.Context, p *producer.Producer, topic string, n int) error {
	start := time.Now()
	var acked, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	remaining := atomic.Int64{}
	remaining.Store(int64(n))
	done := make(chan struct{})
	for i := range n {
		p.SendAsync(ctx, &producer.Message{Topic: topic, Key: fmt.Appendf(nil, "customer-%d", i%10), Value: fmt.Appendf(nil, "event-%d", i)},
			func(_ int32, _ int64, err error) {
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				} else {
					acked.Add(1)
				}
				if remaining.Add(-1) == 0 {
					close(done)
				}
			})
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	log.Printf("async: %d acknowledged, %d failed in %v", acked.Load(), failed.Load(), time.Since(start).Round(time.Millisecond))
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("async: %d record(s) failed, the first: %w", failed.Load(), *e)
	}
	return nil
}
