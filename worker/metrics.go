package worker

import (
	"errors"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// Metric names, all in the kafkaworker namespace: what alerts and
// dashboards query (the Grafana dashboard in dashboards/ uses exactly these).
// README's metric table says what each one counts.
const (
	MetricMessagesConsumed   = "kafkaworker_messages_consumed_total"
	MetricMessagesProcessed  = "kafkaworker_messages_processed_total"
	MetricProcessingDuration = "kafkaworker_processing_duration_seconds"
	MetricProcessingDelay    = "kafkaworker_processing_delay_seconds"
	MetricConsumerLag        = "kafkaworker_consumer_lag"
	MetricInFlight           = "kafkaworker_in_flight_messages"
	MetricAssignedPartitions = "kafkaworker_assigned_partitions"
	MetricRebalances         = "kafkaworker_rebalances_total"
	MetricCommits            = "kafkaworker_commits_total"
	MetricForwardErrors      = "kafkaworker_forward_errors_total"
	MetricBuildInfo          = "kafkaworker_build_info"
	MetricOldestInFlightAge  = "kafkaworker_oldest_in_flight_age_seconds"
	MetricIntakeBlocked      = "kafkaworker_intake_blocked_total"
)

// durationBuckets are OpenTelemetry's advisory buckets for durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// numBuckets is len(durationBuckets), as a constant for array sizes.
const numBuckets = 14

// metrics holds the worker's Prometheus collectors. Every label value is
// bounded: group, topic, partition, result; never keys, offsets or error
// text. Two workers on one registry share the collectors, told apart by
// the group label; the gauges they might share move by Add, not Set.
type metrics struct {
	group         string
	deliveries    *deliveryCollector // consumed, processed, duration, delay
	lag           *prometheus.GaugeVec
	inFlight      prometheus.Gauge
	assigned      prometheus.Gauge
	rebalances    prometheus.Counter
	commits       *prometheus.CounterVec
	forwardErrors *prometheus.CounterVec
	generation    atomic.Int32           // highest generation seen, to count rebalances
	oldestAge     *prometheus.GaugeVec   // per partition: age of the oldest unfinished message
	intakeBlocked *prometheus.CounterVec // per partition and reason: times intake stopped
	board         *statusBoard           // what the status page shows; this worker's own
}

func newMetrics(reg prometheus.Registerer, group string) (*metrics, error) {
	g := prometheus.Labels{"group": group}
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
	gauge := func(name string) *prometheus.GaugeVec {
		d := metricdef.Lookup(name)
		return r(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: d.Name, Help: d.Help}, d.Labels)).(*prometheus.GaugeVec)
	}
	m := &metrics{
		group:         group,
		board:         newStatusBoard(),
		deliveries:    r(newDeliveryCollector()).(*deliveryCollector),
		lag:           gauge(MetricConsumerLag),
		inFlight:      gauge(MetricInFlight).With(g),
		assigned:      gauge(MetricAssignedPartitions).With(g),
		rebalances:    counter(MetricRebalances).With(g),
		commits:       counter(MetricCommits),
		forwardErrors: counter(MetricForwardErrors),
		oldestAge:     gauge(MetricOldestInFlightAge),
		intakeBlocked: counter(MetricIntakeBlocked),
	}
	gauge(MetricBuildInfo).WithLabelValues(versions()).Set(1)
	return m, errors.Join(errs...)
}

// register registers c, or returns the collector already registered under
// the same description, so that several workers can share a registry.
func register(reg prometheus.Registerer, c prometheus.Collector) (prometheus.Collector, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return are.ExistingCollector, nil
	}
	return c, err
}

// versions returns this module's, Go's and sarama's versions.
func versions() (module, goVersion, saramaVersion string) {
	module, saramaVersion = "devel", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == "github.com/kafkaworker/kafkaworker" && bi.Main.Version != "" {
			module = bi.Main.Version
		}
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/kafkaworker/kafkaworker":
				module = d.Version
			case "github.com/IBM/sarama":
				saramaVersion = d.Version
			}
		}
	}
	return module, runtime.Version(), saramaVersion
}

// forPartition returns the per-message stats of a newly claimed partition,
// tracked by the collector until retire.
func (m *metrics) forPartition(topic string) *deliveryStats {
	if m == nil {
		return nil
	}
	s := newDeliveryStats(m.group, topic)
	m.deliveries.track(s)
	return s
}

func (m *metrics) commit(ok bool) {
	if m == nil {
		return
	}
	r := metricdef.Success
	if !ok {
		r = metricdef.Error
	}
	m.commits.WithLabelValues(m.group, r.Label()).Inc()
}

// noteGeneration counts a rebalance the first time a generation is seen.
func (m *metrics) noteGeneration(gen int32) {
	if m == nil {
		return
	}
	for {
		seen := m.generation.Load()
		if gen <= seen {
			return
		}
		if m.generation.CompareAndSwap(seen, gen) {
			m.rebalances.Inc()
			return
		}
	}
}

func (m *metrics) setLag(topic string, partition int32, lag int64) {
	if m != nil {
		m.lag.WithLabelValues(m.group, topic, strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
	}
}

func (m *metrics) dropLag(topic string, partition int32) {
	if m != nil {
		m.lag.DeleteLabelValues(m.group, topic, strconv.Itoa(int(partition)))
		m.oldestAge.DeleteLabelValues(m.group, topic, strconv.Itoa(int(partition)))
		m.board.dropPartition(topic, partition) // a released partition leaves the status page too
	}
}

func (m *metrics) setOldestAge(topic string, partition int32, age time.Duration) {
	if m != nil {
		m.oldestAge.WithLabelValues(m.group, topic, strconv.Itoa(int(partition))).Set(age.Seconds())
	}
}

func (m *metrics) noteIntakeBlocked(topic, reason string) {
	if m != nil {
		m.intakeBlocked.WithLabelValues(m.group, topic, reason).Inc()
	}
}
