// Package worker runs a Kafka consumer group as a production worker: it
// hands every message to a handler.Handler on a pool of goroutines, keeps
// per-key (or per-partition) order, marks an offset only once it and every
// earlier offset of its partition were handled successfully, retries
// failures in place with backoff, and on shutdown or revocation drains,
// commits and leaves cleanly.
//
// Shutdown order, when Run's context is cancelled:
//
//  1. Each claimed partition stops starting handlers at once; messages not
//     yet started are dropped (they were not marked, so they are consumed
//     again by the next owner).
//  2. Running handlers get up to Config.ShutdownTimeout to finish; what
//     finishes is marked. Handlers still running then see their context
//     cancelled and their results are discarded.
//  3. Marked offsets, with the done-set of what finished behind an
//     unfinished offset, are committed synchronously, the session's
//     partitions in one request. The session stays in the group meanwhile,
//     so a rebalance in flight completes and a commit refused for a stale
//     generation is retried with the new one, for up to finalCommitGrace
//     after the shutdown timeout.
//  4. The session ends and the member leaves the group (unless static
//     membership is on), so its partitions move to other members at once;
//     leaving and closing the connections get closeTimeout.
//  5. The handler goroutines exit (one that ignores its cancelled context
//     is abandoned, not waited for again) and Run returns nil.
//
// Every stage works to deadlines from one clock (stopClock, shutdown.go).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// Worker consumes a group's topics and hands each message to a Handler.
// Create it with New and start it with Run; a Worker runs once.
type Worker struct {
	cfg            Config
	handler        handler.Handler
	log            *slog.Logger
	saramaHooks    []func(*sarama.Config)
	sarama         *sarama.Config
	registerer     prometheus.Registerer
	metrics        *telemetry.Metrics
	tracerProvider trace.TracerProvider
	propagator     propagation.TextMapPropagator
	tracing        telemetry.Tracing
	middleware     []middleware.Middleware
	httpServer     bool
	tokenProvider  sarama.AccessTokenProvider
	health         health
	started        atomic.Bool
}

// New checks cfg and builds a Worker that will hand messages to h. It does
// not connect to Kafka; Run does.
func New(cfg Config, h handler.Handler, opts ...Option) (*Worker, error) {
	if h == nil {
		return nil, errors.New("kafkaworker: New: handler is nil: pass a handler.Handler, e.g. handler.HandlerFunc(fn)")
	}
	w := &Worker{cfg: cfg, handler: h, log: slog.Default(), registerer: prometheus.DefaultRegisterer, httpServer: true}
	for _, opt := range opts {
		if opt != nil {
			opt(w)
		}
	}
	if err := cfg.validate(w.tokenProvider != nil); err != nil {
		return nil, err
	}
	s, err := saramaConfigWith(cfg, w.tokenProvider, w.saramaHooks)
	if err != nil {
		return nil, err
	}
	w.sarama = s
	w.tracing = telemetry.NewTracing(w.tracerProvider, w.propagator)
	w.handler = middleware.Chain(w.middleware...)(w.handler)
	if w.metrics, err = telemetry.NewMetrics(w.registerer, cfg.GroupID); err != nil {
		return nil, fmt.Errorf("kafkaworker: register metrics: %w", err)
	}
	return w, nil
}

// Config returns the configuration the worker runs with.
func (w *Worker) Config() Config { return w.cfg }

// Run joins the group and processes messages until ctx is cancelled, then
// shuts down in the order given in the package documentation and returns
// nil. It returns an error only when it cannot start (no broker answered
// within Config.ConnectTimeout, a source topic does not exist: a
// *MissingTopicsError, bad sarama settings, the group or a topic not
// authorized: a *FatalError) or when the group fails for good: then, after
// the usual shutdown, a *FatalError (authorization or SASL failures, a
// fenced instance id, a full group, an incompatible protocol, a consumed
// topic that stays missing; see fatalHints). A rebalance, a moving coordinator or
// a broker hiccup is retried, not returned. After ctx is cancelled Run
// returns within Config.ShutdownTimeout + 5s, whatever the broker or the
// handlers do (see shutdown.go). Connecting, logged attempt by attempt,
// also ends when ctx is cancelled: Run then returns nil within a second, as
// on any other cancel. Run may be called once; a second call returns
// ErrAlreadyRunning.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	stopHTTP, err := w.serveHTTP()
	if err != nil {
		return err
	}
	defer stopHTTP() // last: the endpoints answer throughout the drain
	w.warnInsecure()
	c, err := w.connect(ctx)
	if err != nil {
		if ctx.Err() != nil { // stopped while connecting: a stop like any other
			w.log.Info("kafkaworker stopped before it had connected")
			return nil
		}
		return err
	}
	defer c.closeWithin(0) // run closed them, or gave up waiting
	w.log.Info("kafkaworker starting", slog.Any("config", w.effectiveConfig()))
	if err := w.run(ctx, c); err != nil {
		w.log.Error("kafkaworker stopped: the consumer group failed for good", slog.Any("error", err))
		return err
	}
	w.log.Info("kafkaworker stopped")
	return nil
}

// conns are the Kafka clients of one Run.
type conns struct {
	client       sarama.Client // the group's: join, heartbeats, fetches
	commitClient sarama.Client // commits and the readiness probe, apart from the group's connection
	group        sarama.ConsumerGroup
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
	return openCancellable(ctx, w.log, w.open, func(c *conns) { c.closeWithin(closeTimeout) })
}

// open opens the clients, the admin and the forwarder, after checking that
// the source topics exist: all or nothing.
func (w *Worker) open() (_ *conns, err error) {
	c := &conns{topo: w.cfg.topology()}
	defer func() {
		if err != nil {
			c.closeWithin(closeTimeout)
		}
	}()
	if c.client, err = sarama.NewClient(w.cfg.Brokers, w.sarama); err != nil {
		return nil, fmt.Errorf("kafkaworker: connect to %v: %w", w.cfg.Brokers, err)
	}
	if c.group, err = sarama.NewConsumerGroupFromClient(w.cfg.GroupID, c.client); err != nil {
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

// run consumes until ctx is done, or the group fails for good (the
// *FatalError it returns), and shuts down in the documented order.
func (w *Worker) run(parent context.Context, c *conns) error {
	ctx, cancel := context.WithCancel(parent) // a fatal error stops the worker as a cancellation would
	defer cancel()
	errsDone := make(chan struct{})
	failed := &fatalSignal{ch: make(chan struct{})}
	go w.logGroupErrors(c.group, c.admin, c.topo.Consumed(), failed, errsDone)
	go func() { // a fatal error stops the worker as a cancellation would
		select {
		case <-failed.ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	pool := newPool(w.cfg.Concurrency)
	commits := commit.NewCommitter(commit.Params{
		Client: c.commitClient, Group: w.cfg.GroupID, Version: w.sarama.Version, InstanceID: w.cfg.InstanceID,
		Interval: w.cfg.CommitInterval, Log: w.log, OnCommit: w.metrics.Commit, Beat: func() { w.health.beat(loopCommitter) },
	})
	loopsCtx, stopLoops := context.WithCancel(context.Background())
	commitsDone, probeDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(commitsDone); commits.Run(loopsCtx) }()
	go func() { defer close(probeDone); w.health.probe(loopsCtx, c.commitClient, c.topo.Consumed(), w.tracing) }()
	gh := &groupHandler{
		w: w, pool: pool, client: c.client, group: c.group, admin: c.admin, topo: c.topo, fwd: c.fwd, commits: commits, metrics: w.metrics,
		stopping: ctx.Done(), stop: &stopClock{timeout: w.cfg.ShutdownTimeout}, clock: &coarseClock{},
		base: context.WithoutCancel(ctx), exited: make(chan struct{}, 1),
	}

	// Consume gets a context of its own, cancelled only once every claim has
	// drained and committed (see leaveAfterDrain): cancelling it earlier would
	// abort a rebalance in flight and leave this member committing with a
	// generation the group has moved past, and the commits would be refused.
	consumeCtx, cancelConsume := context.WithCancel(context.WithoutCancel(ctx))
	leaveDone := make(chan struct{})
	go func() { defer close(leaveDone); gh.leaveAfterDrain(ctx, cancelConsume) }()
	if f := w.consume(ctx, consumeCtx, c.group, gh); f != nil {
		failed.set(f)
	}
	cancel()
	cancelConsume()
	<-leaveDone
	stopLoops() // every partition made its final commit on release

	// Each of these ends by its own deadline; a request to a broker that
	// went silent may still be winding down, and is not waited for.
	closeBy := time.Now().Add(closeTimeout)
	if !waitWithin(time.Until(closeBy), commitsDone, probeDone) {
		w.log.Warn("a commit or broker probe is still waiting for a silent broker; not waiting for it")
	}
	if !c.closeWithin(time.Until(closeBy)) || !waitWithin(time.Until(closeBy), errsDone) { // leaves the group
		w.log.Warn("leaving the group and closing the connections did not finish in time; not waiting for them",
			slog.Duration("waited", closeTimeout))
	}
	gh.clock.stop()
	// Handlers that ignored their cancelled context had until the drain
	// deadline already; they are not waited for a second time.
	if !pool.stop(max(time.Until(gh.stop.deadline()), 100*time.Millisecond)) {
		w.log.Error("handlers ignored their cancelled context and are still running; abandoning them")
	}
	return failed.get()
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

// logGroupErrors logs what sarama reports on the group's error channel. A
// consumed topic that no longer exists, or that the worker may not read,
// shows only there (its partition consumers retry, the session goes on):
// an authorization failure is reported to failed as a *FatalError at once;
// a missing topic makes it check, and once the topics have stayed missing
// it reports a *FatalError to failed.
func (w *Worker) logGroupErrors(group sarama.ConsumerGroup, admin sarama.ClusterAdmin, topics []string, failed *fatalSignal, done chan<- struct{}) {
	defer close(done)
	var missing missingTopics
	for err := range group.Errors() {
		w.log.Error("consumer group error", slog.Any("error", err))
		switch {
		case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
			if f := missing.check(admin, topics); f != nil {
				failed.set(f)
			}
		case errors.Is(err, sarama.ErrTopicAuthorizationFailed), errors.Is(err, sarama.ErrGroupAuthorizationFailed):
			// A fetch refused for want of Read: sarama reports it here
			// and retries it forever.
			var denied []string
			var ce *sarama.ConsumerError
			if errors.As(err, &ce) {
				denied = []string{ce.Topic}
			}
			failed.set(w.fatal(err, denied))
		}
	}
}

// revokeTimeout is how long a revoked partition's running handlers may
// finish: four fifths of the rebalance timeout, less the time a holding
// dispatcher may take to notice the revocation (stallAfter), leaving room
// to commit before sarama and the coordinator give up on this member.
func (w *Worker) revokeTimeout() time.Duration {
	rt := w.sarama.Consumer.Group.Rebalance.Timeout
	return max(rt*4/5-stallAfter, rt/2)
}
