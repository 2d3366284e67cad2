package telemetry

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// ProducerMetrics are a producer's Prometheus collectors, built from
// metricdef's producer table. Producers on one registry share them: their
// series add up by topic. Label values are bounded: topic, reason, result.
type ProducerMetrics struct {
	sent     *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewProducerMetrics registers the producer's collectors with reg, or
// takes those already registered there by another producer.
func NewProducerMetrics(reg prometheus.Registerer) (*ProducerMetrics, error) {
	var errs []error
	r := func(c prometheus.Collector) prometheus.Collector {
		c, err := register(reg, c)
		errs = append(errs, err)
		return c
	}
	counter := func(name string) *prometheus.CounterVec {
		d := metricdef.Lookup(name)
		return r(prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)).(*prometheus.CounterVec)
	}
	d := metricdef.Lookup(metricdef.ProducerSendDuration)
	m := &ProducerMetrics{
		sent:   counter(metricdef.ProducerSent),
		errors: counter(metricdef.ProducerErrors),
		duration: r(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: durationBuckets},
			d.Labels)).(*prometheus.HistogramVec),
	}
	return m, errors.Join(errs...)
}

// Sent counts a message the broker acknowledged after took.
func (m *ProducerMetrics) Sent(topic string, took time.Duration) {
	m.sent.WithLabelValues(topic).Inc()
	m.duration.WithLabelValues(topic, metricdef.Success.Label()).Observe(took.Seconds())
}

// Failed counts a message that failed for reason (one of
// metricdef.ProducerErrorReasons) after took.
func (m *ProducerMetrics) Failed(topic, reason string, took time.Duration) {
	m.errors.WithLabelValues(topic, reason).Inc()
	m.duration.WithLabelValues(topic, metricdef.Error.Label()).Observe(took.Seconds())
}
