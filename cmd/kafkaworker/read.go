package main

import (
	"context"
	"fmt"
	"sync"
	"time"

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
			markersOnly := func(next int64) bool { return c.markersOnly(spec.topic, p, next, spec.end[p]) }
			forward(ctx, pc, from, spec.end[p], spec.follow, markersOnly, msgs, errs)
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

// idleProbe is how long a partition read up to an end waits for a record
// before it checks whether only transaction markers are left before the end.
const idleProbe = 200 * time.Millisecond

// forward passes one partition's records, from offset from, to msgs until
// end (unless follow) or ctx is done, then closes the partition consumer.
// A topic written in transactions holds commit and abort markers, which
// take offsets but are never delivered: when the partition has been idle
// for idleProbe short of end, markersOnly(next) says whether only markers
// are left before end, which is the end too.
func forward(ctx context.Context, pc sarama.PartitionConsumer, from, end int64, follow bool, markersOnly func(next int64) bool, msgs chan<- *sarama.ConsumerMessage, errs chan<- error) {
	defer func() { _ = pc.Close() }()
	next := from
	var idle <-chan time.Time
	t := time.NewTimer(idleProbe)
	defer t.Stop()
	if !follow {
		idle = t.C
	}
	for follow || next < end {
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
			next = m.Offset + 1
			t.Reset(idleProbe)
		case <-idle:
			if markersOnly(next) {
				return
			}
			t.Reset(idleProbe)
		}
	}
}

// markersOnly reports whether topic/p holds nothing a consumer of the
// connection's isolation level is given from next up to end: transaction
// markers only, and (read_committed) records of aborted transactions. It
// fetches once from the partition's leader, and answers false when it
// cannot tell (an error, a batch not fetched whole).
func (c *conn) markersOnly(topic string, p int32, next, end int64) bool {
	if !c.client.Config().Version.IsAtLeast(sarama.V0_11_0_0) {
		return false // no transactions before Kafka 0.11
	}
	leader, err := c.client.Leader(topic, p)
	if err != nil {
		return false
	}
	isolation := c.client.Config().Consumer.IsolationLevel
	req := &sarama.FetchRequest{Version: 4, MaxBytes: 1 << 20, MinBytes: 1, Isolation: isolation}
	req.AddBlock(topic, p, next, 1<<20, -1)
	resp, err := leader.Fetch(req)
	if err != nil {
		return false
	}
	b := resp.GetBlock(topic, p)
	if b == nil || b.Err != sarama.ErrNoError {
		return false
	}
	aborted := b.AbortedTransactions // by first offset
	abortedBy := map[int64]bool{}    // producers inside an aborted transaction
	at := next
	for _, recs := range b.RecordsSet {
		rb := recs.RecordBatch
		if rb == nil || rb.PartialTrailingRecord {
			return false
		}
		for len(aborted) > 0 && aborted[0].FirstOffset <= rb.LastOffset() {
			abortedBy[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
		switch {
		case rb.Control:
			delete(abortedBy, rb.ProducerID) // the marker ends its transaction
		case isolation == sarama.ReadCommitted && rb.IsTransactional && abortedBy[rb.ProducerID]:
		default:
			return false // a record to wait for
		}
		if rb.LastOffset() >= at {
			at = rb.LastOffset() + 1
		}
		if at >= end {
			return true
		}
	}
	return at >= end
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
