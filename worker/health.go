package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// probeInterval is how often the worker checks that it can reach the
// brokers, for /readyz.
const probeInterval = time.Second

// wedgedAfter is how long one iteration of a background loop may take
// before /healthz calls the loop wedged: longer than any network timeout
// sarama applies, so a slow or unreachable broker never makes a healthy
// process look dead (that is /readyz's business).
const wedgedAfter = 2 * time.Minute

// health holds what /healthz and /readyz report.
type health struct {
	joined    atomic.Bool  // in a group session
	reachable atomic.Int64 // unix nanos of the last successful broker probe
	loops     [2]atomic.Int64
}

// The background loops whose progress /healthz watches.
const (
	loopCommitter = iota
	loopProbe
)

func (h *health) beat(loop int) { h.loops[loop].Store(time.Now().UnixNano()) }

// live reports whether every loop that ever beat did so recently.
func (h *health) live() bool {
	now := time.Now().UnixNano()
	for i := range h.loops {
		if last := h.loops[i].Load(); last != 0 && now-last > int64(wedgedAfter) {
			return false
		}
	}
	return true
}

// ready reports whether the worker is in a group session and reached the
// brokers within the last few probes.
func (h *health) ready() bool {
	last := h.reachable.Load()
	return h.joined.Load() && last != 0 && time.Now().UnixNano()-last < int64(3*probeInterval)
}

// probe refreshes the metadata of topics every probeInterval until ctx is
// done, recording each success. It also rechecks whether tracing is on.
func (h *health) probe(ctx context.Context, client sarama.Client, topics []string, tr tracing) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		h.beat(loopProbe)
		tr.refresh() // a tracer provider installed after New starts being used
		if err := client.RefreshMetadata(topics...); err == nil {
			h.reachable.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
