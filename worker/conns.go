package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/engine"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/kconn"
)

// conns are the Kafka clients of one Run.
type conns struct {
	client       sarama.Client // the group's: join, heartbeats, fetches
	commitClient sarama.Client // commits and the readiness probe, apart from the group's connection
	group        sarama.ConsumerGroup
	starts       *engine.StartOffsets // the client group is made from: claims' start offsets read at once
	admin        sarama.ClusterAdmin
	topo         forward.Topology
	fwd          *forward.Forwarder

	closeOnce sync.Once
	closed    chan struct{} // closed once everything is closed
}

// connect waits for a bootstrap broker to answer (see awaitBroker), then
// opens everything Run needs from Kafka, or nothing: on error what was
// opened is closed again. Once ctx is done it returns ctx.Err() at once;
// what it was opening is closed in the background when sarama returns.
func (w *Worker) connect(ctx context.Context) (*conns, error) {
	if err := w.awaitBroker(ctx); err != nil {
		return nil, err
	}
	return kconn.OpenCancellable(ctx, w.log, w.open, func(c *conns) { c.closeWithin(engine.CloseTimeout) })
}

// open opens the clients, the admin and the forwarder, after checking that
// the source topics exist: all or nothing.
func (w *Worker) open() (_ *conns, err error) {
	c := &conns{topo: w.cfg.topology()}
	defer func() {
		if err != nil {
			c.closeWithin(engine.CloseTimeout)
		}
	}()
	if c.client, err = sarama.NewClient(w.cfg.Brokers, w.sarama); err != nil {
		return nil, fmt.Errorf("kafkaworker: connect to %v: %w", w.cfg.Brokers, err)
	}
	c.starts = engine.NewStartOffsets(c.client)
	if c.group, err = sarama.NewConsumerGroupFromClient(w.cfg.GroupID, c.starts); err != nil {
		return nil, fmt.Errorf("kafkaworker: consumer group %q: %w", w.cfg.GroupID, err)
	}
	if c.admin, err = sarama.NewClusterAdminFromClient(c.client); err != nil {
		return nil, fmt.Errorf("kafkaworker: admin client: %w", err)
	}
	if err = checkSourceTopics(c.admin, w.cfg); err != nil {
		return nil, err
	}
	// sarama retries a group authorization failure of its coordinator
	// lookup for about 30s before Consume reports it; asking once here
	// (sarama retries thrice) reports it at start. Other errors are left
	// to Consume, which retries them.
	if _, cerr := c.client.Coordinator(w.cfg.GroupID); errors.Is(cerr, sarama.ErrGroupAuthorizationFailed) {
		return nil, w.fatal(cerr, nil)
	}
	if c.fwd, err = w.startForwarder(c.admin, c.topo); err != nil {
		return nil, err
	}
	// Commits go over a connection of their own: on the group's connection
	// they would queue behind a JoinGroup parked for a rebalance.
	if c.commitClient, err = sarama.NewClient(w.cfg.Brokers, commit.ClientConfig(w.sarama)); err != nil {
		return nil, fmt.Errorf("kafkaworker: connect the committer to %v: %w", w.cfg.Brokers, err)
	}
	return c, nil
}

// closeWithin closes what connect opened, the group first (which leaves
// it), and waits for that d at most: a silent broker must not hold Run up.
// It reports whether everything closed; calling it again waits again for
// the same close.
func (c *conns) closeWithin(d time.Duration) bool {
	c.closeOnce.Do(func() {
		c.closed = make(chan struct{})
		go func() {
			defer close(c.closed)
			if c.group != nil {
				_ = c.group.Close()
			}
			_ = c.fwd.Close()
			for _, cl := range []sarama.Client{c.commitClient, c.client} {
				if cl != nil {
					_ = cl.Close()
				}
			}
		}()
	})
	return waitWithin(d, c.closed)
}

// startForwarder makes sure the retry and dead-letter topics exist and
// starts the producer that publishes to them; nil when nothing is forwarded.
func (w *Worker) startForwarder(admin sarama.ClusterAdmin, topo forward.Topology) (*forward.Forwarder, error) {
	if len(topo.ForwardTopics()) == 0 { // no retry tiers and no dead-letter topic
		return nil, nil
	}
	limits, err := forward.EnsureTopics(admin, topo, w.cfg.RetryCreateTopics, w.log)
	var gone *forward.MissingSourcesError
	if errors.As(err, &gone) {
		return nil, sourceTopicsMissing(gone.Topics)
	}
	if err != nil {
		return nil, err
	}
	return forward.New(forward.Params{
		Brokers: w.cfg.Brokers, Group: w.cfg.GroupID, Policy: w.cfg.retryPolicy(topo),
		Principal: w.cfg.principalArg(), Base: w.sarama, Tracing: w.tracing, Limits: limits, Log: w.log,
	})
}

// waitWithin waits for every channel to close, for d at most in all.
func waitWithin(d time.Duration, chs ...<-chan struct{}) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for _, ch := range chs {
		select {
		case <-ch:
			continue // already closed: never lose to an expired timer
		default:
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
	return true
}

// Connecting, bounded and cancellable: see internal/kconn.

// awaitBroker returns nil once one of the bootstrap brokers answers, an
// error naming the brokers and the last failure once ConnectTimeout has
// passed without an answer, a refused certificate or login at once, or
// ctx.Err() as soon as ctx is done.
func (w *Worker) awaitBroker(ctx context.Context) error {
	return kconn.AwaitBroker(ctx, kconn.Await{
		Brokers: w.cfg.Brokers, Timeout: w.cfg.ConnectTimeout, Sarama: w.sarama, Security: w.cfg.security(), Log: w.log,
	})
}

// saramaConfig turns a validated Config into a sarama.Config, applies the
// WithSaramaConfig hooks, and checks what the worker relies on (see
// kconn.SaramaConfig).
func saramaConfig(c Config, hooks []func(*sarama.Config)) (*sarama.Config, error) {
	return saramaConfigWith(c, nil, hooks)
}

// saramaConfigWith is saramaConfig with the WithTokenProvider option, for
// KAFKA_SASL_MECHANISM=OAUTHBEARER.
func saramaConfigWith(c Config, tp sarama.AccessTokenProvider, hooks []func(*sarama.Config)) (*sarama.Config, error) {
	var strategy sarama.BalanceStrategy
	if mk := strategies[c.RebalanceStrategy]; mk != nil {
		strategy = mk()
	}
	return kconn.SaramaConfig(kconn.Settings{
		ClientID: c.ClientID, Version: c.Version, InitialNewest: c.InitialOffset.canonical() == OffsetNewest,
		Strategy: strategy, SessionTimeout: c.SessionTimeout, HeartbeatInterval: c.HeartbeatInterval,
		RebalanceTimeout: c.RebalanceTimeout, MetadataRefresh: c.MetadataRefresh, InstanceID: c.InstanceID,
		Security: c.security(), TokenProvider: tp, Hooks: hooks, ReadCommitted: c.ExactlyOnce,
	})
}
