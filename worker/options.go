package worker

import (
	"log/slog"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/middleware"
)

// Option supplies what is code rather than configuration: a logger, hooks.
type Option func(*Worker)

// WithLogger sets the logger for the worker's own messages (joins,
// assignments, revocations, retries, commit problems). Default:
// slog.Default(). The worker never calls slog.SetDefault, and sarama's global
// logger stays silent.
func WithLogger(l *slog.Logger) Option {
	return func(w *Worker) {
		if l != nil {
			w.log = l
		}
	}
}

// WithSaramaConfig is an escape hatch: fn may change the sarama.Config built
// from Config (TLS, SASL, fetch sizes, ...) before it is validated. Settings
// the worker depends on for its guarantees are checked afterwards, and New
// fails with an error naming the one fn broke.
func WithSaramaConfig(fn func(*sarama.Config)) Option {
	return func(w *Worker) { w.saramaHooks = append(w.saramaHooks, fn) }
}

// WithRegisterer sets where the worker registers its Prometheus metrics
// (default: prometheus.DefaultRegisterer). Several workers may share one
// registry: their series differ by the group label, and workers of the same
// group add up.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(w *Worker) {
		if r != nil {
			w.registerer = r
		}
	}
}

// WithTracerProvider sets where delivery spans go. The default is the otel
// global provider, read again every second, so a provider the application
// installs after New is picked up; until one is installed the worker skips
// tracing entirely.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(w *Worker) { w.tracerProvider = tp }
}

// WithPropagator sets how trace context is read from and written to message
// headers (default: the otel global propagator). Note that the global
// propagator does nothing until the application sets one,
// e.g. otel.SetTextMapPropagator(propagation.TraceContext{}); until then no
// traceparent is read or written.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(w *Worker) { w.propagator = p }
}

// WithMiddleware wraps the handler in m, the first outermost (see
// middleware.Chain). The worker itself already recovers panics, records
// metrics and traces each delivery around the whole chain, so middleware is
// for the application's own concerns. A retried message goes through the
// chain again.
func WithMiddleware(m ...middleware.Middleware) Option {
	return func(w *Worker) { w.middleware = append(w.middleware, m...) }
}

// WithHTTPServer(false) stops the worker from serving METRICS_ADDR itself,
// for an application that mounts Worker.HTTPHandler on its own server. The
// default is true: with METRICS_ADDR set, Run serves the endpoints.
func WithHTTPServer(enabled bool) Option {
	return func(w *Worker) { w.httpServer = enabled }
}

// WithTokenProvider supplies the OAUTHBEARER tokens for
// KAFKA_SASL_MECHANISM=OAUTHBEARER; sarama asks it for a token on every new
// connection. New fails, naming this option, when the mechanism is set
// without it.
func WithTokenProvider(p sarama.AccessTokenProvider) Option {
	return func(w *Worker) { w.tokenProvider = p }
}
