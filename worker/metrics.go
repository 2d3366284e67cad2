package worker

import (
	"errors"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, all in the kafkaworker namespace. The Grafana dashboard in
// dashboards/ uses exactly these.
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

// MetricNames lists every metric the worker exports.
var MetricNames = []string{
	MetricMessagesConsumed, MetricMessagesProcessed, MetricProcessingDuration, MetricProcessingDelay,
	MetricConsumerLag, MetricInFlight, MetricAssignedPartitions, MetricRebalances, MetricCommits,
	MetricForwardErrors, MetricBuildInfo, MetricOldestInFlightAge, MetricIntakeBlocked,
}

// result is the outcome of a delivery, the result label of the processed
// and duration metrics: every delivery gets exactly one.
type result int

const (
	resultSuccess    result = iota // the handler returned nil
	resultError                    // it failed; the message stays for another delivery in place
	resultRetry                    // it failed and the message was published to a retry tier
	resultDeadLetter               // it failed and the message was published to the dead-letter topic
	numResults
)

// ResultLabels are the values of the result label, indexed by result.
var ResultLabels = [numResults]string{"success", "error", "retry", "dead_letter"}

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
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return r(prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)).(*prometheus.CounterVec)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return r(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)).(*prometheus.GaugeVec)
	}
	m := &metrics{
		group:         group,
		board:         newStatusBoard(),
		deliveries:    r(newDeliveryCollector()).(*deliveryCollector),
		lag:           gauge(MetricConsumerLag, "High watermark minus the committable offset, per assigned partition.", "group", "topic", "partition"),
		inFlight:      gauge(MetricInFlight, "Messages held in memory: taken from Kafka and not yet done (queued, running, backing off, or waiting for a due time).", "group").With(g),
		assigned:      gauge(MetricAssignedPartitions, "Partitions currently assigned.", "group").With(g),
		rebalances:    counter(MetricRebalances, "Rebalances this worker took part in.", "group").With(g),
		commits:       counter(MetricCommits, "Offset commit requests by result.", "group", "result"),
		forwardErrors: counter(MetricForwardErrors, "Failed publishes to retry and dead-letter topics, by destination topic and reason (too_large, invalid, unauthorized, unknown_topic, other).", "group", "topic", "reason"),
	}
	m.oldestAge = gauge(MetricOldestInFlightAge, "Seconds since the oldest unfinished message of the partition was taken from Kafka; 0 when none is.", "group", "topic", "partition")
	m.intakeBlocked = counter(MetricIntakeBlocked, "Times a partition stopped taking messages: reason in_flight (WORKER_MAX_IN_FLIGHT messages held) or done_set (the record of finished offsets neared the commit metadata limit).", "group", "topic", "reason")
	info := gauge(MetricBuildInfo, "Always 1; labels name the versions.", "version", "go_version", "sarama_version")
	info.WithLabelValues(versions()).Set(1)
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
func (m *metrics) forPartition(topic string, mu *sync.Mutex) *deliveryStats {
	if m == nil {
		return nil
	}
	s := newDeliveryStats(m.group, topic, mu)
	m.deliveries.track(s)
	return s
}

func (m *metrics) commit(ok bool) {
	if m == nil {
		return
	}
	r := resultSuccess
	if !ok {
		r = resultError
	}
	m.commits.WithLabelValues(m.group, ResultLabels[r]).Inc()
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
