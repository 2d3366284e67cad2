package worker

import (
	"log/slog"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
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
