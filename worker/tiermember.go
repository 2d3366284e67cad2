package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/engine"
)

// Retry tiers that hold nothing should cost nothing. Claimed through the
// group like the sources, each of their partitions (three per source
// partition by default) costs sarama an offset manager, a partition
// consumer with its goroutines and buffers and two offset requests, and the
// worker a dispatcher, all at every session start, then goroutines the
// collector scans; with 256 source partitions that was about as much again
// as the worker itself. So, when the group uses cooperative-sticky alone
// (a member joining or leaving then moves only the tier partitions; the
// sources keep being handled throughout), the worker's group member
// subscribes to the source topics only, and the tiers are consumed by a
// second member in the same group (same group id: their offsets and lag
// stay where they are), on a connection of its own, that this worker
// starts only while the tiers hold work and that leaves once every
// partition it claims has been idle for tierLinger and the group's tiers
// hold no work (see leaves):
//
//   - started at once when this worker forwards a record to a tier;
//   - otherwise started when the check (every tierCheckEvery, while no tier
//     member runs) finds a tier partition whose end offset is past the
//     group's committed offset (another worker forwarded, or this one
//     before a restart), so every worker in the group starts one and the
//     tier partitions spread over them as before.
//
// A record forwarded to a tier is never lost: it waits in its partition,
// below which the group's committed offset stays until it was handled, and
// the check finds it. With static membership (KAFKA_INSTANCE_ID) the
// worker's member stays static and the tier member is dynamic (its
// commits carry no instance id), so that it leaves when idle. Eager
// strategies (a join or leave would stop every member's partitions) and
// exactly-once (one transaction commits the offsets of one member) keep
// the tiers in the worker's one member, as before.
var (
	tierLinger     = time.Minute
	tierCheckEvery = engine.TierCheckEvery
)

// lazyTiers reports whether the retry tiers are consumed by a member of
// their own, only while they hold work.
func (w *Worker) lazyTiers() bool {
	if len(w.cfg.RetryTopicDelays) == 0 || w.cfg.ExactlyOnce {
		return false
	}
	s := w.sarama.Consumer.Group.Rebalance.GroupStrategies
	return len(s) == 1 && s[0].Name() == sarama.CooperativeStickyBalanceStrategyName
}

// tierMember runs the retry tiers' group member while they hold work.
type tierMember struct {
	w      *Worker
	c      *conns
	params engine.Params // the worker's; each member gets its own client and group
	topics []string      // the retry-tier topics
	watch  *engine.TierWatch
	failed *fatalSignal
	kick   chan struct{} // this worker forwarded to a tier
	done   chan struct{} // closed when run returned

	mu      sync.Mutex
	closeFn func(time.Duration) bool // closes the last member's group and client
}

func newTierMember(w *Worker, c *conns, params engine.Params, topics []string, watch *engine.TierWatch, failed *fatalSignal) *tierMember {
	t := &tierMember{w: w, c: c, params: params, topics: topics, watch: watch, failed: failed,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	watch.SetOnForward(func() {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	})
	return t
}

// run starts a member whenever the tiers hold work, until ctx (Run's) is
// done. It returns once the last member's claims drained and committed
// (bounded by the stop budget); close then closes its connection.
func (t *tierMember) run(ctx context.Context) {
	defer close(t.done)
	check := time.NewTicker(tierCheckEvery)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-check.C:
			work, err := engine.TiersHoldWork(t.c.commitClient, t.w.cfg.GroupID, t.topics)
			if err != nil {
				t.w.log.Debug("cannot tell whether the retry tiers hold work; starting their member", slog.Any("error", err))
			} else if !work {
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		t.serve(ctx)
		if ctx.Err() != nil {
			return
		}
		if !t.close(engine.CloseTimeout) {
			t.w.log.Warn("the retry tiers' group member did not close in time; not waiting for it")
		}
	}
}

// close closes the last member's group (leaving it) and client, waiting d
// at most; it reports whether they closed.
func (t *tierMember) close(d time.Duration) bool {
	t.mu.Lock()
	f := t.closeFn
	t.mu.Unlock()
	return f == nil || f(d)
}

// serve runs one member until every partition it claims was idle for
// tierLinger, or ctx is done; it returns once the member's claims have
// drained and committed (close closes it).
func (t *tierMember) serve(ctx context.Context) {
	w := t.w
	cfg := *w.sarama
	cfg.ClientID += "-tiers"
	cfg.Consumer.Group.InstanceId = "" // a dynamic member: it leaves when idle, and a restart moves only the tiers
	// A strategy of its own: sarama's cooperative-sticky keeps the member's
	// generation and owned partitions, and "must not be shared between
	// consumer groups" (lazyTiers checked that it is the one strategy).
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
	client, err := sarama.NewClient(w.cfg.Brokers, &cfg)
	if err != nil {
		w.log.Warn("cannot connect the retry tiers' group member; trying again", slog.Any("error", err), slog.Duration("retry_in", tierCheckEvery))
		t.pause(ctx)
		return
	}
	starts := engine.NewStartOffsets(client)
	group, err := sarama.NewConsumerGroupFromClient(w.cfg.GroupID, starts)
	if err != nil {
		_ = client.Close()
		w.log.Warn("cannot make the retry tiers' group member; trying again", slog.Any("error", err), slog.Duration("retry_in", tierCheckEvery))
		t.pause(ctx)
		return
	}
	errsDone := make(chan struct{})
	go w.logGroupErrors(group, t.c.admin, t.topics, t.failed, errsDone)
	var once sync.Once
	closed := make(chan struct{})
	t.mu.Lock()
	t.closeFn = func(d time.Duration) bool {
		once.Do(func() {
			go func() { defer close(closed); _ = group.Close(); _ = client.Close(); <-errsDone }()
		})
		return waitWithin(d, closed)
	}
	t.mu.Unlock()
	if ctx.Err() != nil { // Run stopped meanwhile: start closing; its stop waits for that within its close deadline
		t.close(0)
		return
	}
	p := t.params
	p.Client, p.ConsumerGroup, p.StartOffsets, p.OnSession, p.Dynamic = client, group, starts, nil, true
	consumer := engine.New(p)
	w.log.Info("retry tiers hold work: their group member joins", slog.Any("topics", t.topics))

	memberCtx, stop := context.WithCancel(ctx)
	defer stop()
	consumeCtx, cancelConsume := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConsume()
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		if f := w.consume(memberCtx, consumeCtx, group, t.c.admin, t.topics, consumer); f != nil {
			t.failed.set(f)
		}
	}()
	leaveDone := make(chan struct{})
	go func() {
		defer close(leaveDone)
		select {
		case <-ctx.Done(): // Run stops: the session ends once the claims drained and committed
			consumer.LeaveAfterDrain(ctx, cancelConsume)
		case <-consumed:
		}
	}()

	tick := time.NewTicker(tierCheckEvery)
	defer tick.Stop()
	idleSince := time.Now()
	for idle := false; !idle; {
		select {
		case <-ctx.Done():
			<-leaveDone
			waitWithin(time.Until(t.params.Deadlines.CommitBy())+engine.CloseTimeout, consumed)
			return
		case <-consumed: // a fatal error, which stops Run
			<-leaveDone
			return
		case <-t.kick:
			idleSince = time.Now()
		case now := <-tick.C:
			if !consumer.Settled() || consumer.Active() > t.watch.IdleCount() {
				idleSince = now
				continue
			}
			idle = now.Sub(idleSince) >= tierLinger && t.leaves()
		}
	}
	// Every claim idle for tierLinger, and nothing waits in the tiers: end
	// the session (the claims drain and commit as on a revocation) and
	// leave.
	w.log.Info("retry tiers idle: their group member leaves", slog.Duration("idle_for", tierLinger))
	stop()
	cancelConsume()
	<-consumed
	<-leaveDone
}

// leaves reports whether a member whose own claims have been idle for
// tierLinger may leave: only when the group's tiers hold no work. While
// they do (another member's records wait for their due time), the check
// in run would start a member again within tierCheckEvery, a rebalance
// each way every tierLinger for each idle worker, and each rebalance may
// move tier partitions with messages in flight. When it cannot tell, it
// stays.
func (t *tierMember) leaves() bool {
	work, err := engine.TiersHoldWork(t.c.commitClient, t.w.cfg.GroupID, t.topics)
	if err != nil {
		t.w.log.Debug("cannot tell whether the retry tiers hold work; their group member stays", slog.Any("error", err))
		return false
	}
	return !work
}

// pause waits tierCheckEvery or until ctx is done.
func (t *tierMember) pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(tierCheckEvery):
	}
}
