package main

import (
	"context"
	"fmt"
	"runtime/pprof"
	"time"

	"github.com/IBM/sarama"
)

// rawSaramaConfig is the raw side's sarama configuration: what a textbook
// sarama consumer uses, sarama's defaults but for the oldest initial offset
// (as the worker's default), the sticky strategy, sarama's auto-commit of
// marked offsets every second, and errors returned. It is not the worker's
// (see internal/kconn/sarama.go: cooperative-sticky, its own committer with
// sarama's auto-commit off, shorter rejoin backoff, no topic
// auto-creation); the table notes list both from the configs themselves.
func rawSaramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "kafkaworker-bench-raw"
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	c.Consumer.Offsets.AutoCommit.Enable = true
	c.Consumer.Offsets.AutoCommit.Interval = time.Second
	c.Consumer.Return.Errors = true
	return c
}

// rawHandler is the textbook sarama consumer: a ConsumeClaim loop that
// handles each message inline, one at a time per partition, and marks it.
type rawHandler struct {
	work workFunc
	// done is called after each message is handled and marked.
	done func()
	// setup, if set, is called when a session starts.
	setup func()
}

// Setup calls h.setup, if set; it is part of sarama.ConsumerGroupHandler.
func (h *rawHandler) Setup(sarama.ConsumerGroupSession) error {
	if h.setup != nil {
		h.setup()
	}
	return nil
}

// Cleanup does nothing; it is part of sarama.ConsumerGroupHandler.
func (h *rawHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim handles the claim's messages in order until the claim or
// the session ends.
func (h *rawHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx := sess.Context()
	msgs := claim.Messages()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			h.work(ctx, m.Key, m.Value)
			sess.MarkMessage(m, "")
			h.done()
		case <-ctx.Done():
			return nil
		}
	}
}

// consumeRaw runs a raw sarama consumer group on topics until ctx is
// cancelled, then closes it (which commits what was marked). It returns an
// error only when the group cannot be created; errors from the group's
// Errors channel are passed to onErr.
func consumeRaw(ctx context.Context, brokers []string, group string, topics []string, h *rawHandler, onErr func(error)) error {
	g, err := sarama.NewConsumerGroup(brokers, group, rawSaramaConfig())
	if err != nil {
		return fmt.Errorf("raw sarama: connect to %v: %w", brokers, err)
	}
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for err := range g.Errors() {
			onErr(err)
		}
	}()
	for ctx.Err() == nil {
		if err := g.Consume(ctx, topics, h); err != nil && ctx.Err() == nil {
			onErr(err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	err = g.Close()
	<-errsDone
	return err
}

// runRaw consumes s.topic with a fresh group through raw sarama and
// measures it.
func (b *bench) runRaw(ctx context.Context, s spec) (measurement, error) {
	group := b.name("raw")
	t := newTally(s.n)
	h := &rawHandler{work: s.work, done: t.add}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go pprof.Do(runCtx, pprof.Labels("side", "raw"), func(ctx context.Context) {
		errc <- consumeRaw(ctx, b.cluster.Addrs(), group, []string{s.topic}, h, func(err error) {
			progress("raw sarama group %s: %v", group, err)
		})
	})
	stop := stopper(cancel, errc, "raw sarama consumer")
	return b.await(ctx, "raw sarama", group, s, t, errc, stop)
}
