package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/commit"
)

// The stop budget. When Run's context is cancelled at T, every stage of the
// shutdown works to deadlines derived from T, so that Run returns by
// T + ShutdownTimeout + finalCommitGrace + closeTimeout at the latest,
// whatever the broker or the handlers do:
//
//   - running handlers may finish until T + ShutdownTimeout;
//   - final commits are retried (through a rebalance in flight) until
//     T + ShutdownTimeout + finalCommitGrace, or less when they land;
//   - leaving the group and closing the connections get closeTimeout;
//   - handler goroutines that ignored their cancelled context are
//     abandoned at T + ShutdownTimeout, never waited for twice.
const (
	finalCommitGrace = 2 * time.Second
	closeTimeout     = time.Second
)

// stopClock holds the time Run's context was cancelled, as the deadline of
// the handler drain every shutdown stage works from.
type stopClock struct {
	timeout time.Duration
	once    sync.Once
	at      time.Time
}

// deadline is the moment running handlers must have finished by: the
// shutdown timeout after the first call, which the worker makes as soon as
// Run's context is done.
func (s *stopClock) deadline() time.Time {
	s.once.Do(func() { s.at = time.Now().Add(s.timeout) })
	return s.at
}

// commitDeadline is the moment final commits are given up.
func (s *stopClock) commitDeadline() time.Time { return s.deadline().Add(finalCommitGrace) }

// leaveAfterDrain waits for Run's context, then for every claim to drain and
// commit (each ConsumeClaim watches the same context and returns when done),
// and only then cancels the Consume call with cancelConsume, which ends the
// session. Claims finish by the commit deadline, as their drain and commits
// are bounded; one that still has not (sarama has not handed it to the
// handler yet) is given up shortly after, so Run always returns.
func (g *groupHandler) leaveAfterDrain(ctx context.Context, cancelConsume context.CancelFunc) {
	<-ctx.Done()
	limit := time.Until(g.stop.commitDeadline()) + commit.RetryEvery
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for g.active.Load() > 0 {
		select {
		case <-g.exited:
		case <-deadline.C:
			g.w.log.Error("partitions did not finish draining in time; leaving the group anyway",
				slog.Int64("partitions", g.active.Load()), slog.Duration("waited", limit))
			cancelConsume()
			return
		}
	}
	cancelConsume()
}
