package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"

	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/doneset"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// groupHandler is the sarama.ConsumerGroupHandler of a running Worker. Each
// ConsumeClaim call is one claimed partition's dispatcher.
type groupHandler struct {
	w       *Worker
	pool    *pool
	client  sarama.Client // the group's: resolves a new claim's start offset
	group   sarama.ConsumerGroup
	admin   sarama.ClusterAdmin // reads the done-set committed with each offset
	topo    forward.Topology
	fwd     *forward.Forwarder // nil when nothing is forwarded
	commits *commit.Committer
	metrics *telemetry.Metrics
	// stopping is closed when Run's context is done: drains then use the
	// shutdown timeout instead of the revoke one.
	stopping <-chan struct{}
	stop     *stopClock // the deadlines of a shutdown, from when stopping closed
	clock    *coarseClock
	// base is the parent of every handler context: Run's values, without
	// Run's cancellation, which must not interrupt the drain.
	base context.Context

	active atomic.Int64  // ConsumeClaim calls in progress
	exited chan struct{} // signalled (non-blocking) when one returns
}

func (g *groupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	g.w.health.joined.Store(true)
	g.w.log.Info("joined consumer group",
		attr.Group(g.w.cfg.GroupID),
		slog.String("member_id", sess.MemberID()), slog.Int("generation", int(sess.GenerationID())),
		slog.Any("assigned", sess.Claims()))
	return nil
}

func (g *groupHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	g.w.health.joined.Store(false)
	g.w.log.Info("left consumer group session",
		attr.Group(g.w.cfg.GroupID),
		slog.Int("generation", int(sess.GenerationID())))
	return nil
}

// ConsumeClaim runs the claim's dispatcher (see dispatch.go) until sarama
// closes Messages() (revoked, or the session ends), the session context is
// done or Run is stopping; then it drains, commits synchronously and
// returns.
func (g *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	g.active.Add(1)
	defer func() {
		g.active.Add(-1)
		select {
		case g.exited <- struct{}{}:
		default:
		}
	}()
	p := g.newPartition(sess, claim)
	g.metrics.NoteGeneration(sess.GenerationID())
	g.metrics.AddAssigned(1)
	g.commits.Add(p.state)
	if restart := g.startClaim(sess, claim, p); !restart {
		d := &dispatcher{g: g, p: p, claim: claim, tp: map[string][]int32{claim.Topic(): {claim.Partition()}}}
		d.run(sess.Context().Done())
	}
	g.release(sess, p)
	return nil // before the claim was revoked, this ends the session: sarama rejoins
}

func (g *groupHandler) newPartition(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) *partition {
	cfg := g.w.cfg
	ctx, cancel := context.WithCancel(g.base)
	topic, id := claim.Topic(), claim.Partition()
	skip, meta := g.previousDoneSet(topic, id)
	p := &partition{
		topic: topic, id: id, ordering: cfg.Ordering, hop: g.topo.Hop(topic), fwd: g.fwd,
		handler: g.w.handler, pool: g.pool, log: g.w.log,
		retry: func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = cfg.RetryBackoffInitial, cfg.RetryBackoffMax, 0
			b.Reset()
			return b
		},
		sess: sess, all: g.metrics,
		state: commit.NewState[*task](commit.StateParams{
			Topic: topic, Partition: id, Session: sess, Initial: claim.InitialOffset(),
			Skip: skip, SkipMeta: meta, // commits keep the previous owner's done-set until this one's replaces it
			MaxHeld: cfg.MaxInFlight, Log: g.w.log,
		}),
		tracing: g.w.tracing, spanAttrs: attr.PartitionSpan(topic, cfg.GroupID, id),
		ctx: ctx, cancel: cancel,
		keys:  make(map[string]*keyState),
		clock: g.clock, stuckAfter: cfg.StuckAfter,
		backingOff: make(map[*task]*time.Timer),
		runExit:    make(chan struct{}, 1),
		stats:      g.metrics.ForPartition(topic),
	}
	return p
}

// previousDoneSet reads the done-set committed with the partition's offset
// by its previous owner. On any failure it logs and returns an empty set:
// those messages are then handled again, which at-least-once allows.
func (g *groupHandler) previousDoneSet(topic string, id int32) (doneset.Set, string) {
	resp, err := g.admin.ListConsumerGroupOffsets(g.w.cfg.GroupID, map[string][]int32{topic: {id}})
	var block *sarama.OffsetFetchResponseBlock
	if err == nil {
		if block = resp.GetBlock(topic, id); block == nil {
			err = errors.New("no offset in the response")
		} else if block.Err != sarama.ErrNoError {
			err = block.Err
		}
	}
	var set doneset.Set
	if err == nil {
		set, err = doneset.Decode(block.Metadata)
	}
	if err != nil {
		g.w.log.Warn("cannot read the done-set committed with the offset; messages already handled after it will be handled again",
			attr.Topic(topic), attr.Partition(id),
			slog.Any("error", err))
		return nil, ""
	}
	g.w.log.Info("partition assigned",
		attr.Topic(topic), attr.Partition(id),
		slog.Int64("committed", block.Offset), slog.Int("done_ranges", len(set)))
	if len(set) == 0 {
		return nil, ""
	}
	return set, block.Metadata
}

// release drains the partition within the revoke or shutdown deadline and
// commits what is ready before the claim goes back to the group.
func (g *groupHandler) release(sess sarama.ConsumerGroupSession, p *partition) {
	rt := g.w.sarama.Consumer.Group.Rebalance.Timeout
	why, drainBy, commitBy := "revoked", time.Now().Add(g.w.revokeTimeout()), time.Now().Add(rt*9/10)
	select {
	case <-g.stopping:
		why, drainBy, commitBy = "shutdown", g.stop.deadline(), g.stop.commitDeadline()
	default:
	}
	timeout := max(time.Until(drainBy), 0)
	g.w.log.Debug("draining partition", attr.Topic(p.topic),
		attr.Partition(p.id), slog.String("reason", why), slog.Duration("timeout", timeout))
	abandoned := p.drain(timeout)
	commitErr := g.commits.Release(p.state, commitBy)
	g.metrics.DropLag(p.topic, p.id)
	g.metrics.AddAssigned(-1)
	p.reportInFlight(true) // what was taken and not done now belongs to the next owner
	g.metrics.Retire(p.stats)
	attrs := append([]any{attr.Topic(p.topic), attr.Partition(p.id), slog.String("reason", why)}, p.state.LogAttrs()...)
	attrs = append(attrs, slog.Int("skipped_already_done", p.state.Snapshot().Skipped))
	switch {
	case commitErr != nil:
		g.w.log.Error("final commit of a released partition failed; the next owner re-handles what this commit would have covered",
			append(attrs, slog.Any("error", commitErr))...)
	case abandoned > 0:
		g.w.log.Warn("partition released with handlers still running; their results are discarded and the messages will be handled again",
			append(attrs, slog.Int("abandoned", abandoned), slog.Duration("drain_timeout", timeout))...)
	default:
		g.w.log.Info("partition released", attrs...)
	}
}
