package worker

import (
	"context"
	"log/slog"
	"time"
)

// leaveAfterDrain waits for Run's context, then for every claim to drain and
// commit (each ConsumeClaim watches the same context and returns when done),
// and only then cancels the Consume call with cancelConsume, which ends the
// session. A claim that cannot finish (its commit stuck behind a rebalance
// that never completes) is given up after the shutdown timeout plus the
// rebalance timeout, so Run always returns.
func (g *groupHandler) leaveAfterDrain(ctx context.Context, cancelConsume context.CancelFunc) {
	<-ctx.Done()
	limit := g.w.cfg.ShutdownTimeout + g.w.sarama.Consumer.Group.Rebalance.Timeout
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
