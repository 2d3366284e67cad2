package engine

import (
	"context"
	"log/slog"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/commit"
)

// LeaveAfterDrain waits for Run's context, then for every claim to drain and
// commit (each ConsumeClaim watches the same context and returns when done),
// and only then cancels the Consume call with cancelConsume, which ends the
// session. Claims finish by the commit deadline, as their drain and commits
// are bounded; one that still has not (sarama has not handed it to the
// handler yet) is given up shortly after, so Run always returns.
func (g *Consumer) LeaveAfterDrain(ctx context.Context, cancelConsume context.CancelFunc) {
	<-ctx.Done()
	limit := time.Until(g.Deadlines.CommitBy()) + commit.RetryEvery
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for g.active.Load() > 0 {
		select {
		case <-g.exited:
		case <-deadline.C:
			g.log.Error("partitions did not finish draining in time; leaving the group anyway",
				slog.Int64("partitions", g.active.Load()), slog.Duration("waited", limit))
			cancelConsume()
			return
		}
	}
	cancelConsume()
}
