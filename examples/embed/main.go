// Embed is the smallest complete service built on kafkaworker, the program
// the README shows: configuration from the environment, one handler, a
// graceful stop on SIGINT or SIGTERM.
//
//	KAFKA_BROKERS=localhost:9092 KAFKA_GROUP_ID=billing KAFKA_TOPICS=orders go run ./examples/embed
package main

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

func main() {
	cfg, err := worker.ConfigFromEnv() // KAFKA_BROKERS, KAFKA_GROUP_ID, KAFKA_TOPICS, WORKER_* ...
	if err != nil {
		log.Fatal(err) // names every offending variable and why
	}
	w, err := worker.New(cfg, handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		return process(ctx, m) // nil = done; an error (or a panic) = retried, never skipped
	}))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil { // blocks; on SIGTERM: drain, commit, leave, return nil
		log.Fatal(err)
	}
}

// process is where the service's work goes.
func process(ctx context.Context, m *handler.Message) error { return nil }
