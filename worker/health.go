package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/telemetry"
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
	ok, _ := h.liveness(time.Now())
	return ok
}

// liveness is live() with the reason when not, for the status page.
func (h *health) liveness(now time.Time) (bool, string) {
	names := [...]string{loopCommitter: "committer", loopProbe: "broker probe"}
	for i := range h.loops {
		if last := h.loops[i].Load(); last != 0 && now.UnixNano()-last > int64(wedgedAfter) {
			return false, fmt.Sprintf("the %s loop is wedged: no progress for %s", names[i], time.Duration(now.UnixNano()-last).Round(time.Second))
		}
	}
	return true, ""
}

// ready reports whether the worker is in a group session and reached the
// brokers within the last few probes.
func (h *health) ready() bool {
	ok, _ := h.readiness(time.Now())
	return ok
}

// readiness is ready() with the reason when not, for the status page.
func (h *health) readiness(now time.Time) (bool, string) {
	last := h.reachable.Load()
	switch {
	case !h.joined.Load():
		return false, "not in a group session"
	case last == 0:
		return false, "the brokers have not been reached yet"
	case now.UnixNano()-last >= int64(3*probeInterval):
		return false, fmt.Sprintf("the brokers were last reached %s ago", time.Duration(now.UnixNano()-last).Round(time.Second))
	}
	return true, ""
}

// probe refreshes the metadata of topics every probeInterval until ctx is
// done, recording each success. It also rechecks whether tracing is on.
func (h *health) probe(ctx context.Context, client sarama.Client, topics []string, tr telemetry.Tracing) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		h.beat(loopProbe)
		tr.Refresh() // a tracer provider installed after New starts being used
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
