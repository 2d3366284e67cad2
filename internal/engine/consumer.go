package engine

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/doneset"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/outbox"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/internal/txn"
)

// Ordering is which messages of a partition must not overlap.
type Ordering int

const (
	OrderByKey       Ordering = iota // messages of one key run one at a time, in offset order
	OrderByPartition                 // the partition's messages run one at a time, in offset order
	OrderNone                        // any message may run at any time
)

// Params are what a Consumer is made from: the settings it works by and
// the parts of the run it uses, each passed in.
type Params struct {
	Group         string
	Ordering      Ordering
	MaxInFlight   int                    // WORKER_MAX_IN_FLIGHT, per partition
	RetryBackoff  func() backoff.BackOff // a fresh in-place retry backoff per failing message
	StuckAfter    time.Duration          // WORKER_STUCK_AFTER; 0: never reported
	TickEvery     time.Duration          // how often a dispatcher reports lag and watches held messages (the commit interval)
	InitialOffset int64                  // sarama's Consumer.Offsets.Initial, for claims with no committed offset
	Handler       handler.Handler        // the application's, wrapped in its middleware
	Batch         *Batch                 // a BatchHandler's batching (worker.NewBatch); nil for a Handler
	Log           *slog.Logger
	Tracing       telemetry.Tracing
	Metrics       *telemetry.Metrics
	Client        sarama.Client        // the group's: resolves a new claim's start offset
	ConsumerGroup sarama.ConsumerGroup // pauses and resumes a claim's fetching
	StartOffsets  *StartOffsets        // the client ConsumerGroup was made from, if made from one: its claims' start offsets are read at once (prefetch.go)
	Admin         sarama.ClusterAdmin  // reads the done-set committed with each offset
	Topology      forward.Topology
	Forwarder     *forward.Forwarder // nil when nothing is forwarded
	TierWatch     *TierWatch         // pauses idle retry-tier partitions; nil: never paused for that
	Outputs       Emitter            // sends what handlers produced (worker.Produce)
	Txn           *txn.Txn           // exactly-once: the open transaction (txn.go); nil otherwise
	Committer     *commit.Committer
	Pool          *Pool
	Clock         *Clock
	Deadlines     *Deadlines
	Stopping      <-chan struct{}   // closed when Run's context is done: drains then use the shutdown budget
	Base          context.Context   // the parent of every handler context: Run's values, without its cancellation
	OnSession     func(joined bool) // told when a session starts and ends (readiness)
	Dynamic       bool              // a member without the worker's static membership (the retry tiers'): its commits carry no instance id
}

// dynamicSession is the session of a Dynamic member as its partitions'
// commits see it (commit.DynamicMember).
type dynamicSession struct{ sarama.ConsumerGroupSession }

func (dynamicSession) DynamicMember() {}

// Consumer is the sarama.ConsumerGroupHandler of a running worker. Each
// ConsumeClaim call is one claimed partition's dispatcher.
type Consumer struct {
	Params
	log *slog.Logger

	active  atomic.Int64                                // ConsumeClaim calls in progress
	exited  chan struct{}                               // signalled (non-blocking) when one returns
	sess    atomic.Pointer[sarama.ConsumerGroupSession] // between Setup and Cleanup; nil otherwise
	pre     prefetched                                  // the session's offsets, read at Setup (prefetch.go)
	offsets *StartOffsets                               // Params.StartOffsets, or one sarama does not use
	// chunk is how many messages a dispatcher admits at most before running
	// them inline: inlineChunk; a test may raise it before dispatching.
	chunk int
}

// New makes the Consumer of one run.
func New(p Params) *Consumer {
	offsets := p.StartOffsets
	if offsets == nil {
		offsets = NewStartOffsets(p.Client)
	}
	return &Consumer{Params: p, log: p.Log, exited: make(chan struct{}, 1), offsets: offsets, chunk: inlineChunk}
}

// Active is how many claims are being consumed (ConsumeClaim calls in
// progress).
func (g *Consumer) Active() int { return int(g.active.Load()) }

// Settled reports whether a session is set up and every partition it
// claims is being consumed.
func (g *Consumer) Settled() bool {
	sess := g.sess.Load()
	if sess == nil {
		return false
	}
	n := 0
	for _, ids := range (*sess).Claims() {
		n += len(ids)
	}
	return g.Active() == n
}

func (g *Consumer) Setup(sess sarama.ConsumerGroupSession) error {
	if g.OnSession != nil {
		g.OnSession(true)
	}
	g.log.Info("joined consumer group",
		attr.Group(g.Group),
		slog.String("member_id", sess.MemberID()), slog.Int("generation", int(sess.GenerationID())),
		slog.Any("assigned", sess.Claims()))
	g.prefetch(sess)
	g.sess.Store(&sess)
	return nil
}

func (g *Consumer) Cleanup(sess sarama.ConsumerGroupSession) error {
	g.sess.Store(nil)
	if g.OnSession != nil {
		g.OnSession(false)
	}
	g.log.Info("left consumer group session",
		attr.Group(g.Group),
		slog.Int("generation", int(sess.GenerationID())))
	return nil
}

// ConsumeClaim runs the claim's dispatcher (see dispatch.go) until sarama
// closes Messages() (revoked, or the session ends), the session context is
// done or Run is stopping; then it drains, commits synchronously and
// returns.
func (g *Consumer) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	g.active.Add(1)
	defer func() {
		g.active.Add(-1)
		select {
		case g.exited <- struct{}{}:
		default:
		}
	}()
	p := g.newPartition(sess, claim)
	g.Metrics.NoteGeneration(sess.GenerationID())
	g.Metrics.AddAssigned(1)
	g.Committer.Add(p.state)
	if restart := g.startClaim(sess, claim, p); !restart {
		d := newDispatcher(g, p, claim)
		d.run(sess.Context().Done())
	}
	g.release(sess, p)
	return nil // before the claim was revoked, this ends the session: sarama rejoins
}

func (g *Consumer) newPartition(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) *partition {
	ctx, cancel := context.WithCancel(g.Base)
	topic, id := claim.Topic(), claim.Partition()
	skip, meta := g.previousDoneSet(topic, id)
	commitSess := sess
	if g.Dynamic {
		commitSess = dynamicSession{sess}
	}
	p := &partition{
		topic: topic, id: id, ordering: g.Ordering, hop: g.Topology.Hop(topic), fwd: g.Forwarder, outputs: g.Outputs, txn: g.Txn, tierWatch: g.TierWatch,
		handler: g.Handler, pool: g.Pool, log: g.log, retry: g.RetryBackoff,
		sess: sess, all: g.Metrics,
		state: commit.NewState[*task](commit.StateParams{
			Topic: topic, Partition: id, Session: commitSess, Initial: claim.InitialOffset(),
			Skip: skip, SkipMeta: meta, // commits keep the previous owner's done-set until this one's replaces it
			MaxHeld: g.MaxInFlight, Log: g.log,
		}),
		tracing: g.Tracing, spanAttrs: attr.PartitionSpan(topic, g.Group, id),
		ctx: ctx, cancel: cancel,
		keys:  make(map[string]*keyState),
		clock: g.Clock, stuckAfter: g.StuckAfter,
		backingOff: make(map[*task]*time.Timer),
		runExit:    make(chan struct{}, 1),
		stats:      g.Metrics.ForPartition(topic),
	}
	if g.Txn != nil {
		p.epoch, p.aborted = g.Txn.Current()
	}
	if g.Batch != nil {
		p.batch = &batcher{Batch: *g.Batch, ctx: outbox.InBatch(ctx)}
	}
	return p
}

// previousDoneSet reads the done-set committed with the partition's offset
// by its previous owner. On any failure it logs and returns an empty set:
// those messages are then handled again, which at-least-once allows.
func (g *Consumer) previousDoneSet(topic string, id int32) (doneset.Set, string) {
	block := g.committedOf(topic, id) // read with the session's other claims
	var err error
	if block == nil {
		var resp *sarama.OffsetFetchResponse
		resp, err = g.Admin.ListConsumerGroupOffsets(g.Group, map[string][]int32{topic: {id}})
		if err == nil {
			block = resp.GetBlock(topic, id)
		}
	}
	if err == nil {
		if block == nil {
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
		g.log.Warn("cannot read the done-set committed with the offset; messages already handled after it will be handled again",
			attr.Topic(topic), attr.Partition(id),
			slog.Any("error", err))
		return nil, ""
	}
	g.log.Info("partition assigned",
		attr.Topic(topic), attr.Partition(id),
		slog.Int64("committed", block.Offset), slog.Int("done_ranges", len(set)))
	if len(set) == 0 {
		return nil, ""
	}
	return set, block.Metadata
}

// release drains the partition within the revoke or shutdown deadline and
// commits what is ready before the claim goes back to the group.
func (g *Consumer) release(sess sarama.ConsumerGroupSession, p *partition) {
	why, drainBy, commitBy := "revoked", time.Now().Add(g.Deadlines.RevokeDrain()), time.Now().Add(g.Deadlines.RevokeCommit())
	select {
	case <-g.Stopping:
		why, drainBy, commitBy = "shutdown", g.Deadlines.DrainBy(), g.Deadlines.CommitBy()
	default:
	}
	timeout := max(time.Until(drainBy), 0)
	g.log.Debug("draining partition", attr.Topic(p.topic),
		attr.Partition(p.id), slog.String("reason", why), slog.Duration("timeout", timeout))
	abandoned := p.drain(timeout)
	commitErr := g.Committer.Release(p.state, commitBy)
	g.Metrics.DropLag(p.topic, p.id)
	g.Metrics.AddAssigned(-1)
	p.reportInFlight(true) // what was taken and not done now belongs to the next owner
	g.Metrics.Retire(p.stats)
	attrs := append([]any{attr.Topic(p.topic), attr.Partition(p.id), slog.String("reason", why)}, p.state.LogAttrs()...)
	attrs = append(attrs, slog.Int("skipped_already_done", p.state.Snapshot().Skipped))
	switch {
	case commitErr != nil:
		g.log.Error("final commit of a released partition failed; the next owner re-handles what this commit would have covered",
			append(attrs, slog.Any("error", commitErr))...)
	case abandoned > 0:
		g.log.Warn("partition released with handlers still running; their results are discarded and the messages will be handled again",
			append(attrs, slog.Int("abandoned", abandoned), slog.Duration("drain_timeout", timeout))...)
	default:
		g.log.Info("partition released", attrs...)
	}
}
