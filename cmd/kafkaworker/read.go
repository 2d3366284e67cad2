package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// readSpec says what to read from a topic: each partition from start[p],
// up to end[p] (exclusive), or without end when follow is set.
type readSpec struct {
	topic  string
	start  map[int32]int64
	end    map[int32]int64
	follow bool
}

// errStop, returned by a read callback, ends the read without error.
var errStop = fmt.Errorf("stop")

// read delivers the records spec selects to fn, one at a time, in offset
// order within each partition (partitions interleave). It returns when every
// partition reached its end, when fn returns errStop (nil is returned) or
// another error, or when ctx is done (ctx.Err() is returned). Partitions
// with nothing to read are not fetched at all.
func (c *conn) read(ctx context.Context, spec readSpec, fn func(*sarama.ConsumerMessage) error) error {
	consumer, err := sarama.NewConsumerFromClient(c.client)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer func() { _ = consumer.Close() }()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	msgs := make(chan *sarama.ConsumerMessage)
	errs := make(chan error, len(spec.start))
	var wg sync.WaitGroup
	for p, from := range spec.start {
		if !spec.follow && from >= spec.end[p] {
			continue
		}
		pc, err := consumer.ConsumePartition(spec.topic, p, from)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("read %s/%d from offset %d: %w", spec.topic, p, from, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			forward(ctx, pc, spec.end[p], spec.follow, msgs, errs)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	defer func() { cancel(); <-done }()
	for {
		select {
		case m := <-msgs:
			if err := fn(m); err == errStop {
				return nil
			} else if err != nil {
				return err
			}
		case err := <-errs:
			return err
		case <-done:
			// Every partition stopped: at its end, on an error, or because
			// the caller's context is done (which must not look like the end).
			select {
			case err := <-errs:
				return err
			default:
				return parent.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// forward passes one partition's records to msgs until end (unless follow)
// or ctx is done, then closes the partition consumer.
func forward(ctx context.Context, pc sarama.PartitionConsumer, end int64, follow bool, msgs chan<- *sarama.ConsumerMessage, errs chan<- error) {
	defer func() { _ = pc.Close() }()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-pc.Errors():
			if err != nil {
				errs <- fmt.Errorf("read %s/%d: %w", err.Topic, err.Partition, err.Err)
				return
			}
		case m, ok := <-pc.Messages():
			if !ok {
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
			if !follow && m.Offset+1 >= end {
				return
			}
		}
	}
}

// headersOf converts sarama's record headers to the handler's, in order.
func headersOf(m *sarama.ConsumerMessage) []handler.Header {
	out := make([]handler.Header, 0, len(m.Headers))
	for _, h := range m.Headers {
		if h != nil {
			out = append(out, handler.Header{Key: string(h.Key), Value: h.Value})
		}
	}
	return out
}
