// Package worker runs a Kafka consumer group as a production worker: it
// hands every message to a handler.Handler on a pool of goroutines, keeps
// per-key (or per-partition) order, marks an offset only once it and every
// earlier offset of its partition were handled successfully, retries
// failures in place with backoff, and on shutdown or revocation drains,
// commits and leaves cleanly.
//
// Shutdown order, when Run's context is cancelled (lifecycle.go lists how
// every part of a run starts and stops):
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
//     generation is retried with the new one, for up to 2s (engine.FinalCommitGrace)
//     after the shutdown timeout.
//  4. The session ends and the member leaves the group (unless static
//     membership is on), so its partitions move to other members at once;
//     leaving and closing the connections get 1s (engine.CloseTimeout).
//  5. The handler goroutines exit (one that ignores its cancelled context
//     is abandoned, not waited for again) and Run returns nil.
//
// Every stage works to deadlines from one clock (engine.Deadlines).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/engine"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/middleware"
)

// Worker consumes a group's topics and hands each message to a Handler.
// Create it with New and start it with Run; a Worker runs once.
type Worker struct {
	cfg            Config
	handler        handler.Handler
	batch          *engine.Batch // NewBatch's; nil for New
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

// NewBatch checks cfg and builds a Worker that hands messages to h in
// batches of one partition's messages: up to cfg.BatchMax per call, handed
// over when that many are ready or cfg.BatchWait after the first
// (WORKER_BATCH_MAX, WORKER_BATCH_WAIT). Everything else is as with New:
// offsets are committed once a message is done, a batch's failed messages
// are retried in place, sent to a retry tier or dead-lettered one by one
// (handler.BatchError), and each message and each batch is counted and
// traced. A key's messages may share a batch, in offset order, and are
// never in two batches at once (see handler.BatchHandler).
//
// Not with a batch handler, yet: WithMiddleware (middleware wraps a
// Handler), Config.ExactlyOnce, and Produce (it returns
// ErrProduceInBatch). NewBatch refuses the first two, and a BatchMax above
// MaxInFlight, with a *ValidationError naming each.
func NewBatch(cfg Config, h handler.BatchHandler, opts ...Option) (*Worker, error) {
	if h == nil {
		return nil, errors.New("kafkaworker: NewBatch: handler is nil: pass a handler.BatchHandler, e.g. handler.BatchHandlerFunc(fn)")
	}
	var problems []string
	if cfg.BatchMax > cfg.MaxInFlight && cfg.MaxInFlight > 0 {
		problems = append(problems, fmt.Sprintf("WORKER_BATCH_MAX=%d is more than WORKER_MAX_IN_FLIGHT=%d: a partition never holds a full batch: lower WORKER_BATCH_MAX or raise WORKER_MAX_IN_FLIGHT", cfg.BatchMax, cfg.MaxInFlight))
	}
	// Not only untested: the engine forwards a lot's failures one by one,
	// and with a transaction each forward enters it (txn.Enter, a read
	// lock) until the lot settles, so a lot with two such failures would
	// take that read lock twice on one goroutine and deadlock against a
	// commit waiting between them. Exactly-once batches need one Enter per
	// lot first.
	if cfg.ExactlyOnce {
		problems = append(problems, "WORKER_EXACTLY_ONCE=true with a batch handler: not supported yet: use New with a Handler for exactly-once, or turn it off")
	}
	w, err := New(cfg, batchOnly{}, opts...)
	if err != nil {
		return nil, err
	}
	if len(w.middleware) > 0 {
		problems = append(problems, "WithMiddleware with a batch handler: middleware wraps a handler.Handler and would never run: wrap your BatchHandler yourself")
	}
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	w.batch = &engine.Batch{Handler: h, Max: cfg.BatchMax, Wait: cfg.BatchWait}
	return w, nil
}

// warnUnusedBatchSettings logs, for a worker running a Handler (New), batch
// settings that differ from the defaults: they apply to a BatchHandler
// only, and a value the user set must not pass unnoticed.
func (w *Worker) warnUnusedBatchSettings() {
	d := DefaultConfig()
	if w.batch != nil || (w.cfg.BatchMax == d.BatchMax && w.cfg.BatchWait == d.BatchWait) {
		return
	}
	w.log.Warn("WORKER_BATCH_MAX and WORKER_BATCH_WAIT apply to a batch handler only (worker.NewBatch); this worker runs a Handler (worker.New) and ignores them",
		slog.Int("batch_max", w.cfg.BatchMax), slog.Duration("batch_wait", w.cfg.BatchWait))
}

// batchOnly stands for the Handler of a batch worker: its messages go to
// the BatchHandler, one by one never.
type batchOnly struct{}

func (batchOnly) Handle(context.Context, *handler.Message) error {
	return errors.New("kafkaworker: a batch worker delivered a message singly (a bug: please report it)")
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
// handlers do (see lifecycle.go and engine.Deadlines). Connecting, logged attempt by attempt,
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
	w.warnUnusedBatchSettings()
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
