package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/engine"
	"github.com/kafkaworker/kafkaworker/internal/forward"
)

// run is one run of the worker, from connected to stopped: it consumes
// until ctx is done or the group fails for good (the *FatalError it
// returns). Its parts start in this order and stop in reverse, every stop
// working to the deadlines of one engine.Deadlines:
//
//	start                                   stop
//	0. exactly-once: the transaction        10. its producer closes (aborting what no commit took)
//	1. group-error watcher, fatal watch     8. the watcher ends when the group closes (7)
//	2. handler pool, coarse clock,          9. clock stops; pool goroutines exit by DrainBy;
//	   output producer (on first use)          then the output producer closes in CloseTimeout
//	3. committer, broker probe, tier watch  6. stopped once every partition made its final commit
//	4. the consumer (sarama's sessions),    5. drain-then-leave: each claim drains by DrainBy and
//	   and with cooperative-sticky the         commits by CommitBy, then the session ends (the tier
//	   retry tiers' member, while they         member's too)
//	   hold work (tiermember.go)            7. connections close (the members leave) in CloseTimeout
//
// A request to a broker that went silent may still be winding down when
// run returns; it is not waited for past its deadline.
func (w *Worker) run(parent context.Context, c *conns) error {
	// 0. With exactly-once, the transaction the committer commits in (its
	// producer fences an earlier one with the same id); closed last.
	tx, err := w.startTxn(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(parent) // a fatal error stops the worker as a cancellation would
	defer cancel()
	deadlines := engine.NewDeadlines(w.cfg.ShutdownTimeout, w.sarama.Consumer.Group.Rebalance.Timeout)

	// 1. Watch the group's errors; a fatal one stops the run.
	failed := &fatalSignal{ch: make(chan struct{})}
	errsDone := make(chan struct{})
	go w.logGroupErrors(c.group, c.admin, c.topo.Consumed(), failed, errsDone)
	go func() {
		select {
		case <-failed.ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	// 2. The handler goroutines, the clock their timing reads and the
	// sender of their output (its producer starts on first use).
	pool, clock, outs := engine.NewPool(w.cfg.Concurrency), &engine.Clock{}, w.newOutputs()
	// 3. The background loops.
	commits := commit.NewCommitter(commit.Params{
		Client: c.commitClient, Group: w.cfg.GroupID, Version: w.sarama.Version, InstanceID: w.cfg.InstanceID,
		Interval: w.cfg.CommitInterval, Log: w.log, OnCommit: w.metrics.Commit, Beat: func() { w.health.beat(loopCommitter) },
		Txn: tx, Fatal: func(err error) {
			if ctx.Err() == nil { // not a producer the stop closed under a commit
				failed.set(w.txnFatal(err))
			}
		},
	})
	fns := []func(context.Context){
		func(ctx context.Context) { commits.Run(ctx) },
		func(ctx context.Context) { w.health.probe(ctx, c.commitClient, c.topo.Consumed(), w.tracing) },
	}
	var tiers *engine.TierWatch // idle retry-tier partitions are not fetched
	if len(w.cfg.RetryTopicDelays) > 0 {
		tiers = engine.NewTierWatch(c.client, w.log)
		fns = append(fns, tiers.Run)
	}
	loops := startLoops(fns...)
	// 4. The consumer. Consume gets a context of its own, cancelled only
	// once every claim has drained and committed (LeaveAfterDrain):
	// cancelling it earlier would abort a rebalance in flight and leave this
	// member committing with a generation the group has moved past, and the
	// commits would be refused.
	params := w.engineParams(ctx, c, pool, clock, outs, commits, deadlines)
	params.Txn, params.TierWatch = tx, tiers
	consumer := engine.New(params)
	consumeCtx, cancelConsume := context.WithCancel(context.WithoutCancel(ctx))
	leaveDone := make(chan struct{})
	go func() { defer close(leaveDone); consumer.LeaveAfterDrain(ctx, cancelConsume) }()
	// With cooperative-sticky, the retry tiers have a group member of their
	// own, which runs only while they hold work (tiermember.go).
	topics, tierMember := c.topo.Consumed(), (*tierMember)(nil)
	if w.lazyTiers() {
		var tierTopics []string
		topics, tierTopics = splitTiers(c.topo)
		tierMember = newTierMember(w, c, params, tierTopics, tiers, failed)
		go tierMember.run(ctx)
	}
	if f := w.consume(ctx, consumeCtx, c.group, c.admin, topics, consumer); f != nil {
		failed.set(f)
	}

	// 5. Drain, commit, end the session (the tier member's too).
	cancel()
	cancelConsume()
	<-leaveDone
	if tierMember != nil && !waitWithin(time.Until(deadlines.CommitBy())+commit.RetryEvery, tierMember.done) {
		w.log.Warn("the retry tiers' group member did not finish draining in time; not waiting for it")
	}
	// 6. Every partition made its final commit on release.
	closeBy := time.Now().Add(engine.CloseTimeout)
	if !loops.stop(closeBy) {
		w.log.Warn("a commit or broker probe is still waiting for a silent broker; not waiting for it")
	}
	// 7. and 8. Leave the group and close the connections.
	tiersClosed := make(chan bool, 1)
	go func() { tiersClosed <- tierMember == nil || tierMember.close(time.Until(closeBy)) }()
	if !c.closeWithin(time.Until(closeBy)) || !waitWithin(time.Until(closeBy), errsDone) || !<-tiersClosed {
		w.log.Warn("leaving the group and closing the connections did not finish in time; not waiting for them",
			slog.Duration("waited", engine.CloseTimeout))
	}
	// 9. Handlers that ignored their cancelled context had until the drain
	// deadline already; they are not waited for a second time.
	clock.Stop()
	if !pool.Stop(max(time.Until(deadlines.DrainBy()), 100*time.Millisecond)) {
		w.log.Error("handlers ignored their cancelled context and are still running; abandoning them")
	}
	// The output producer: every message whose output it sent was
	// committed or given up above, so only what a discarded delivery sent
	// may still be in flight; it is flushed until the close deadline.
	if err := outs.close(time.Now().Add(engine.CloseTimeout)); err != nil {
		w.log.Warn("closing the producer of handler output did not finish in time", slog.Any("error", err))
	}
	if tx != nil { // what the last commit did not take is aborted
		if err := tx.Close(engine.CloseTimeout); err != nil {
			w.log.Warn("closing the transactional producer", slog.Any("error", err))
		}
	}
	return failed.get()
}

// engineParams are the engine's settings from the worker's configuration,
// with the parts of this run it uses.
func (w *Worker) engineParams(ctx context.Context, c *conns, pool *engine.Pool, clock *engine.Clock, outs *outputs,
	commits *commit.Committer, deadlines *engine.Deadlines) engine.Params {
	cfg := w.cfg
	return engine.Params{
		Group: cfg.GroupID, Ordering: cfg.Ordering.engine(), MaxInFlight: cfg.MaxInFlight,
		RetryBackoff: func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = cfg.RetryBackoffInitial, cfg.RetryBackoffMax, 0
			b.Reset()
			return b
		},
		StuckAfter: cfg.StuckAfter, TickEvery: cfg.CommitInterval, InitialOffset: w.sarama.Consumer.Offsets.Initial,
		Handler: w.handler, Batch: w.batch, Log: w.log, Tracing: w.tracing, Metrics: w.metrics,
		Client: c.client, ConsumerGroup: c.group, StartOffsets: c.starts, Admin: c.admin, Topology: c.topo, Forwarder: c.fwd, Outputs: outs,
		Committer: commits, Pool: pool, Clock: clock, Deadlines: deadlines,
		Stopping: ctx.Done(), Base: context.WithoutCancel(ctx),
		OnSession: w.health.joined.Store,
	}
}

// splitTiers splits the consumed topics into the sources and the retry
// tiers.
func splitTiers(topo forward.Topology) (sources, tiers []string) {
	for _, t := range topo.Consumed() {
		if topo.Hop(t).Tier > 0 {
			tiers = append(tiers, t)
		} else {
			sources = append(sources, t)
		}
	}
	return sources, tiers
}

// loops are a run's background loops, each running until stop.
type loops struct {
	cancel context.CancelFunc
	done   []chan struct{}
}

// startLoops runs each fn on its own goroutine until stop.
func startLoops(fns ...func(ctx context.Context)) *loops {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loops{cancel: cancel}
	for _, fn := range fns {
		done := make(chan struct{})
		l.done = append(l.done, done)
		go func() { defer close(done); fn(ctx) }()
	}
	return l
}

// stop cancels the loops and waits for them until by; it reports whether
// all ended.
func (l *loops) stop(by time.Time) bool {
	l.cancel()
	chs := make([]<-chan struct{}, len(l.done))
	for i, d := range l.done {
		chs[i] = d
	}
	return waitWithin(time.Until(by), chs...)
}
