// Package producer sends records to Kafka with the worker's settings: the
// same KAFKA_* connection variables (TLS and SASL included, read and
// checked by the same code), idempotent writes acknowledged by every
// in-sync replica, keys partitioned as Kafka's Java client partitions
// them, the trace context in the record headers so a trace runs from the
// producer into the worker that consumes the record, and Prometheus
// metrics.
//
//	p, err := producer.FromEnv()
//	if err != nil { ... }
//	defer p.Close(ctxWithDeadline)
//	partition, offset, err := p.Send(ctx, &producer.Message{Topic: "orders", Key: key, Value: value})
//
// Send waits for the broker's acknowledgement; SendAsync hands the record
// over and reports the outcome to a callback. Both run on one sarama
// AsyncProducer, so they share batches and connections. Close flushes what
// is buffered within its context's deadline.
//
// # Defaults
//
// Producer.Idempotent is on, with RequiredAcks WaitForAll and
// Net.MaxOpenRequests 1, as idempotence needs: a retried batch is written
// once and in order. Sends are retried up to 10 times with exponential
// backoff from 100ms to 2s (about 13s in all), which rides out a leader
// election. A keyed record goes to murmur2(key) mod partitions, the
// formula of Kafka's Java client (sarama.NewMurmur2Partitioner), so Java
// and Go producers put a key on the same partition; a record without a
// key goes to a random partition. Note that sarama's own default, which
// `kafkaworker produce` and kafkatest.Produce use, hashes with FNV-1a and
// puts a key elsewhere: do not mix them on one topic when per-key order
// matters, or set sarama.NewHashPartitioner here through WithSaramaConfig.
// The producer never creates topics.
package producer

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

	"github.com/kafkaworker/kafkaworker/internal/kconn"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// Producer sends messages to Kafka. Create it with New or FromEnv and
// release it with Close. Its methods are safe for concurrent use.
type Producer struct {
	cfg      Config
	log      *slog.Logger
	sarama   *sarama.Config
	ap       sarama.AsyncProducer
	dialer   *kconn.SeverableDialer
	tracing  telemetry.Tracing
	traceAt  atomic.Int64 // unix nanos of the last tracing refresh
	metrics  *telemetry.ProducerMetrics
	giveUp   atomic.Bool // Close's deadline passed: sarama's retries stop waiting
	clientID string

	// mu is held for reading while a send hands a message to sarama, and
	// for writing while Close closes sarama's input, so no send is handed
	// over to a closed input.
	mu        sync.RWMutex
	closing   chan struct{} // closed when Close begins
	closeOnce sync.Once
	drained   chan struct{} // closed once sarama has returned every message and shut down

	pendMu  sync.Mutex
	pending map[*pending]struct{} // handed to sarama, not yet completed
}

// FromEnv reads the Config from the environment (ConfigFromEnv) and
// returns New's producer.
func FromEnv(opts ...Option) (*Producer, error) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	return New(cfg, opts...)
}

// New checks cfg, connects and returns a ready Producer. It looks for a
// bootstrap broker that answers for up to cfg.ConnectTimeout (a refused
// certificate or login fails at once, naming the setting), then starts
// sarama's producer, which fetches metadata and, idempotent, a producer
// id: that gets cfg.ConnectTimeout again. New fails naming the variable
// when either runs out.
func New(cfg Config, opts ...Option) (*Producer, error) {
	o := options{log: slog.Default(), registerer: prometheus.DefaultRegisterer}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := cfg.validate(o.tokenProvider != nil); err != nil {
		return nil, err
	}
	p := &Producer{
		cfg: cfg, log: o.log, clientID: cfg.ClientID,
		closing: make(chan struct{}), drained: make(chan struct{}), pending: map[*pending]struct{}{},
	}
	s, err := p.saramaConfig(o)
	if err != nil {
		return nil, err
	}
	p.sarama = s
	p.tracing = telemetry.NewProducerTracing(o.tracerProvider, o.propagator)
	p.traceAt.Store(time.Now().UnixNano())
	if p.metrics, err = telemetry.NewProducerMetrics(o.registerer); err != nil {
		return nil, fmt.Errorf("kafkaworker/producer: register metrics: %w", err)
	}
	for _, w := range cfg.conn().Security.Warnings() {
		p.log.Warn(w)
	}
	if err := kconn.AwaitBroker(context.Background(), kconn.Await{
		Brokers: cfg.Brokers, Timeout: cfg.ConnectTimeout, Sarama: s, Security: cfg.conn().Security, Log: p.log,
	}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout)
	defer cancel()
	p.dialer = kconn.InstallSeverableDialer(s)
	ap, err := kconn.OpenCancellable(ctx, p.log, func() (sarama.AsyncProducer, error) { return sarama.NewAsyncProducer(cfg.Brokers, s) },
		func(ap sarama.AsyncProducer) { ap.AsyncClose(); drain(ap) })
	if err != nil {
		p.dialer.Sever() // what sarama is still opening fails at once
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("kafkaworker/producer: the producer was not ready within %v (KAFKA_CONNECT_TIMEOUT) at %v: a broker answered, but not the metadata or producer id requests", cfg.ConnectTimeout, cfg.Brokers)
		}
		return nil, fmt.Errorf("kafkaworker/producer: start the producer at %v: %w", cfg.Brokers, err)
	}
	p.ap = ap
	go p.complete()
	shown := cfg
	shown.Version = s.Version.String() // the version in force, sarama's when KAFKA_VERSION is unset
	p.log.Info("kafkaworker producer ready", slog.Any("config", shown))
	return p, nil
}

// drain reads an abandoned producer's results until it has shut down.
func drain(ap sarama.AsyncProducer) {
	succ, errs := ap.Successes(), ap.Errors()
	for succ != nil || errs != nil {
		select {
		case _, ok := <-succ:
			if !ok {
				succ = nil
			}
		case _, ok := <-errs:
			if !ok {
				errs = nil
			}
		}
	}
}

// saramaConfig is the connection's sarama configuration with the
// producer's defaults (see the package documentation), the hooks applied
// last, and what the producer relies on checked.
func (p *Producer) saramaConfig(o options) (*sarama.Config, error) {
	s, err := p.cfg.conn().Sarama(o.tokenProvider)
	if err != nil {
		return nil, err
	}
	s.Producer.Idempotent = true
	s.Producer.RequiredAcks = sarama.WaitForAll
	s.Net.MaxOpenRequests = 1
	s.Producer.Retry.Max = 10
	s.Producer.Retry.BackoffFunc = p.backoff(100*time.Millisecond, 2*time.Second)
	s.Metadata.Retry.BackoffFunc = p.backoff(250*time.Millisecond, 2*time.Second)
	s.Producer.Partitioner = sarama.NewMurmur2Partitioner
	s.Producer.Return.Successes = true
	s.Producer.Return.Errors = true
	for _, hook := range o.saramaHooks {
		if hook != nil {
			hook(s)
		}
	}
	if !s.Producer.Return.Successes || !s.Producer.Return.Errors {
		return nil, errors.New("kafkaworker/producer: WithSaramaConfig turned off Producer.Return.Successes or Producer.Return.Errors; " +
			"the producer reads both to complete every send: leave them on")
	}
	if s.Producer.Partitioner == nil {
		s.Producer.Partitioner = sarama.NewMurmur2Partitioner
	}
	s.Producer.Partitioner = kconn.ExplicitFirst(s.Producer.Partitioner, explicitPartition)
	if err := s.Validate(); err != nil {
		if s.Producer.Idempotent && !s.Version.IsAtLeast(sarama.V0_11_0_0) {
			return nil, fmt.Errorf("kafkaworker/producer: KAFKA_VERSION=%q: the idempotent producer needs 0.11.0 or later: raise KAFKA_VERSION, or turn Producer.Idempotent off through WithSaramaConfig", p.cfg.Version)
		}
		return nil, fmt.Errorf("kafkaworker/producer: sarama configuration: %w", err)
	}
	return s, nil
}

// backoff is exponential from initial to max, and nothing once Close's
// deadline has passed, so the retries of an abandoned flush end at once.
func (p *Producer) backoff(initial, maxWait time.Duration) func(retries, maxRetries int) time.Duration {
	return func(retries, _ int) time.Duration {
		if p.giveUp.Load() {
			return 0
		}
		return min(initial<<min(max(retries-1, 0), 16), maxWait)
	}
}

// Config returns the configuration the producer runs with.
func (p *Producer) Config() Config { return p.cfg }
