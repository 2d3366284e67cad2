package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
	"github.com/kafkaworker/kafkaworker/producer"
)

// ErrNotInHandler is Produce's error for a context that is not a running
// handler's: Produce works only while Handle runs, with the context it was
// given or one derived from it.
var ErrNotInHandler = outbox.ErrNoDelivery

// ErrProduceInBatch is Produce's error in a batch handler (NewBatch): a
// batch's messages succeed or fail one by one, and its output could not be
// told apart by message. A batch handler that must write to Kafka sends
// with a producer.Producer of its own (at-least-once).
var ErrProduceInBatch = outbox.ErrInBatch

// Produce adds msg to the output of the message being handled; ctx is the
// context Handle was given, or one derived from it. Nothing is sent while
// Handle runs. When Handle returns nil the worker sends the output, in the
// order it was produced, and the message is done (its offset committable,
// its key's next message free to start) only once the broker acknowledged
// every record. When Handle fails (an error or a panic) its output is
// dropped, so a message retried in place, through a retry topic or into
// the dead-letter topic emits only what its successful delivery produced.
// A send that fails is retried with the message's in-place backoff without
// running Handle again; until it succeeds the message holds its key and its
// offset stays uncommitted.
//
// The records are sent by a producer the worker starts on first use, with
// its own connection settings, metrics and tracing (package producer:
// idempotent, murmur2 keyed partitioning like Kafka's Java client), each
// send a span under the handler's, so a trace continues into the output.
// Without WORKER_EXACTLY_ONCE this is at-least-once: a worker that dies
// after the send and before the commit sends it again when the message is
// handled again. With it (Config.ExactlyOnce) the records go into the
// worker's open transaction instead, with the message's offset, and a
// read_committed reader sees them exactly once; they are counted in the
// same producer metrics and carry the trace context, without send spans of
// their own.
//
// Produce copies *msg, not its Key, Value or Headers: leave those
// unchanged until Handle returns. It returns ErrNotInHandler outside a
// handler, or once Handle returned, ErrProduceInBatch in a batch handler,
// and an error naming the field for a message without a Topic.
func Produce(ctx context.Context, msg *producer.Message) error {
	switch {
	case msg == nil:
		return errors.New("kafkaworker: Produce: msg is nil: pass a *producer.Message with a Topic")
	case msg.Topic == "":
		return errors.New("kafkaworker: Produce: the message has no Topic: set it")
	}
	return outbox.Add(ctx, *msg)
}

// outputs sends handlers' output (Produce) through a producer started on
// first use and closed when the run ends.
type outputs struct {
	start func() (*producer.Producer, error)

	mu     sync.Mutex
	p      *producer.Producer
	closed bool
}

// errOutputsClosed is a send's error once the run's producer is closed.
var errOutputsClosed = errors.New("kafkaworker: the worker is stopping; output not sent")

// newOutputs returns the run's sender of handler output: a producer with
// w's connection settings and telemetry, started on first use.
func (w *Worker) newOutputs() *outputs {
	cfg := w.cfg
	pc := producer.Config{
		Brokers: cfg.Brokers, ClientID: cfg.ClientID + "-output", Version: cfg.Version, ConnectTimeout: cfg.ConnectTimeout,
		TLSEnabled: cfg.TLSEnabled, TLSCAFile: cfg.TLSCAFile, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
		TLSServerName: cfg.TLSServerName, TLSInsecureSkipVerify: cfg.TLSInsecureSkipVerify,
		SASLMechanism: cfg.SASLMechanism, SASLUsername: cfg.SASLUsername, SASLPassword: cfg.SASLPassword,
		SASLPasswordFile: cfg.SASLPasswordFile,
	}
	opts := []producer.Option{producer.WithLogger(w.log), producer.WithRegisterer(w.registerer),
		producer.WithTracerProvider(w.tracerProvider), producer.WithPropagator(w.propagator),
		producer.WithTokenProvider(w.tokenProvider)}
	for _, hook := range w.saramaHooks {
		opts = append(opts, producer.WithSaramaConfig(hook))
	}
	return &outputs{start: func() (*producer.Producer, error) { return producer.New(pc, opts...) }}
}

// producer returns the run's producer, starting it if need be.
func (o *outputs) producer() (*producer.Producer, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return nil, errOutputsClosed
	case o.p != nil:
		return o.p, nil
	}
	p, err := o.start()
	if err != nil {
		return nil, fmt.Errorf("kafkaworker: start the producer for handler output: %w", err)
	}
	o.p = p
	return p, nil
}

// Emit sends recs and waits for every acknowledgement; it returns the first
// failure, if any.
func (o *outputs) Emit(ctx context.Context, recs []outbox.Record) error {
	p, err := o.producer()
	if err != nil {
		return err
	}
	results := make(chan error, len(recs))
	for i := range recs {
		p.SendAsync(ctx, &recs[i], func(_ int32, _ int64, err error) { results <- err })
	}
	var first error
	for range recs {
		if err := <-results; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// close closes the producer, if one was started, flushing until by.
func (o *outputs) close(by time.Time) error {
	o.mu.Lock()
	p := o.p
	o.closed = true
	o.mu.Unlock()
	if p == nil {
		return nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), by)
	defer cancel()
	return p.Close(ctx)
}
