package worker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/IBM/sarama"
)

// missingTopicChecks is how many failed sessions in a row, spanning at
// least missingTopicFor, must find a consumed topic missing before Run
// gives up: a topic being re-created, or metadata lagging behind a topic
// just created, is waited out.
const (
	missingTopicChecks = 3
	missingTopicFor    = 5 * time.Second
)

// consume calls Consume until ctx is done: an eager rebalance ends each
// call, and transient errors are logged and retried with a capped backoff.
// It returns a *FatalError for a failure that retrying cannot fix, and
// nil once ctx is done.
func (w *Worker) consume(ctx, consumeCtx context.Context, group sarama.ConsumerGroup, admin sarama.ClusterAdmin, topics []string, h sarama.ConsumerGroupHandler) *FatalError {
	delay := 100 * time.Millisecond
	var missing missingTopics
	for ctx.Err() == nil {
		err := group.Consume(consumeCtx, topics, h)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			delay = 100 * time.Millisecond
			missing = missingTopics{}
			continue
		}
		if f := w.fatal(err, nil); f != nil {
			return f
		}
		if f := missing.check(admin, topics); f != nil {
			return f
		}
		w.log.Warn("consumer group session failed; rejoining", slog.Any("error", err), slog.Duration("retry_in", delay))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
	return nil
}

// missingTopics tracks consumed topics found missing after failed sessions.
type missingTopics struct {
	since  time.Time
	checks int
}

// check lists the topics and returns a *FatalError once some have been
// missing missingTopicChecks times in a row over missingTopicFor.
func (m *missingTopics) check(admin sarama.ClusterAdmin, topics []string) *FatalError {
	existing, err := admin.ListTopics()
	if err != nil {
		return nil // cannot tell; the session is retried
	}
	var gone []string
	for _, t := range topics {
		if _, ok := existing[t]; !ok {
			gone = append(gone, t)
		}
	}
	if len(gone) == 0 {
		*m = missingTopics{}
		return nil
	}
	if m.checks == 0 {
		m.since = time.Now()
	}
	m.checks++
	if m.checks < missingTopicChecks || time.Since(m.since) < missingTopicFor {
		return nil
	}
	slices.Sort(gone)
	return &FatalError{
		Err:  &MissingTopicsError{Topics: gone, running: true},
		Hint: fmt.Sprintf("these consumed topics have not existed for %v: create them or fix KAFKA_TOPICS", time.Since(m.since).Round(time.Second)),
	}
}
