package producer

import (
	"log/slog"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Option supplies what is code rather than configuration: a logger,
// telemetry, hooks. The options mirror worker's.
type Option func(*options)

type options struct {
	log            *slog.Logger
	saramaHooks    []func(*sarama.Config)
	registerer     prometheus.Registerer
	tracerProvider trace.TracerProvider
	propagator     propagation.TextMapPropagator
	tokenProvider  sarama.AccessTokenProvider
}

// WithLogger sets the logger for the producer's own messages (connecting,
// insecure settings, closing). Default: slog.Default(). Sends are not
// logged: their outcome goes to the caller, the metrics and the span.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithSaramaConfig is an escape hatch: fn may change the sarama.Config
// built from Config and the producer's defaults (idempotence, acks,
// retries, partitioner, batching, compression, ...) before it is
// validated. Producer.Return.Successes and Producer.Return.Errors must
// stay on (the producer reads both to complete each send): New fails
// naming the one fn turned off.
func WithSaramaConfig(fn func(*sarama.Config)) Option {
	return func(o *options) { o.saramaHooks = append(o.saramaHooks, fn) }
}

// WithRegisterer sets where the producer registers its Prometheus metrics
// (default: prometheus.DefaultRegisterer). Several producers, and
// workers, may share one registry: producers share the collectors and
// their series add up by topic.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) {
		if r != nil {
			o.registerer = r
		}
	}
}

// WithTracerProvider sets where send spans go. The default is the otel
// global provider, read again at most once a second, so a provider the
// application installs after New is picked up; until one is installed
// the producer makes no spans and injects no trace context.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// WithPropagator sets how trace context is written into record headers
// (default: the otel global propagator, which does nothing until the
// application sets one, e.g. otel.SetTextMapPropagator(propagation.TraceContext{})).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.propagator = p }
}

// WithTokenProvider supplies the OAUTHBEARER tokens for
// KAFKA_SASL_MECHANISM=OAUTHBEARER; sarama asks it for a token on every
// new connection. New fails, naming this option, when the mechanism is set
// without it.
func WithTokenProvider(p sarama.AccessTokenProvider) Option {
	return func(o *options) { o.tokenProvider = p }
}
