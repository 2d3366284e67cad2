package worker

import (
	"errors"
	"runtime"
	"runtime/debug"
	"slices"
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

// MetricKind is how Prometheus types a metric.
type MetricKind string

// The kinds of the worker's metrics.
const (
	KindCounter   MetricKind = "counter"
	KindGauge     MetricKind = "gauge"
	KindHistogram MetricKind = "histogram"
)

// MetricDef describes one metric the worker exports: the worker builds its
// collectors from these definitions, and the dashboard's test checks the
// dashboard's queries against them.
type MetricDef struct {
	Name   string
	Kind   MetricKind
	Help   string
	Labels []string
	// Values lists, for a label with a closed set of values, every value
	// the worker sets.
	Values map[string][]string
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

// resultLabels are the values of the result label, indexed by result.
var resultLabels = [numResults]string{"success", "error", "retry", "dead_letter"}

// metricDefs is the one table of the worker's metrics.
var metricDefs = []MetricDef{
	{MetricMessagesConsumed, KindCounter, "Messages taken from Kafka.", []string{"group", "topic"}, nil},
	{MetricMessagesProcessed, KindCounter, "Deliveries to the handler by outcome: success, error (retried in place), retry (sent to a retry topic), dead_letter.",
		[]string{"group", "topic", "result"}, map[string][]string{"result": resultLabels[:]}},
	{MetricProcessingDuration, KindHistogram, "Time the handler took per delivery, by outcome.",
		[]string{"group", "topic", "result"}, map[string][]string{"result": resultLabels[:]}},
	{MetricProcessingDelay, KindHistogram, "Time from the message's timestamp to the start of its first delivery on this topic.", []string{"group", "topic"}, nil},
	{MetricConsumerLag, KindGauge, "High watermark minus the committable offset, per assigned partition.", []string{"group", "topic", "partition"}, nil},
	{MetricInFlight, KindGauge, "Messages held in memory: taken from Kafka and not yet done (queued, running, backing off, or waiting for a due time).", []string{"group"}, nil},
	{MetricAssignedPartitions, KindGauge, "Partitions currently assigned.", []string{"group"}, nil},
	{MetricRebalances, KindCounter, "Rebalances this worker took part in.", []string{"group"}, nil},
	{MetricCommits, KindCounter, "Offset commit requests by result.", []string{"group", "result"},
		map[string][]string{"result": {resultLabels[resultSuccess], resultLabels[resultError]}}},
	{MetricForwardErrors, KindCounter, "Failed publishes to retry and dead-letter topics, by destination topic and reason (too_large, invalid, unauthorized, unknown_topic, other).",
		[]string{"group", "topic", "reason"}, map[string][]string{"reason": {"too_large", "invalid", "unauthorized", "unknown_topic", "other"}}},
	{MetricBuildInfo, KindGauge, "Always 1; labels name the versions.", []string{"version", "go_version", "sarama_version"}, nil},
	{MetricOldestInFlightAge, KindGauge, "Seconds since the oldest unfinished message of the partition was taken from Kafka; 0 when none is.", []string{"group", "topic", "partition"}, nil},
	{MetricIntakeBlocked, KindCounter, "Times a partition stopped taking messages: reason in_flight (WORKER_MAX_IN_FLIGHT messages held) or done_set (the record of finished offsets neared the commit metadata limit).",
		[]string{"group", "topic", "reason"}, map[string][]string{"reason": {"in_flight", "done_set"}}},
}

// MetricDefs returns the definitions of every metric the worker exports, a
// copy the caller may change.
func MetricDefs() []MetricDef {
	out := make([]MetricDef, len(metricDefs))
	for i, d := range metricDefs {
		d.Labels = slices.Clone(d.Labels)
		vals := make(map[string][]string, len(d.Values))
		for k, v := range d.Values {
			vals[k] = slices.Clone(v)
		}
		d.Values = vals
		out[i] = d
	}
	return out
}

// MetricNames returns the name of every metric the worker exports.
func MetricNames() []string {
	out := make([]string, len(metricDefs))
	for i, d := range metricDefs {
		out[i] = d.Name
	}
	return out
}

// ResultLabels returns the values of the result label of the processed and
// duration metrics, one per outcome of a delivery.
func ResultLabels() []string { return slices.Clone(resultLabels[:]) }

// metricDef returns the definition of the metric called name; the table
// holds every name the worker uses, so a miss is a programming error.
func metricDef(name string) MetricDef {
	i := slices.IndexFunc(metricDefs, func(d MetricDef) bool { return d.Name == name })
	if i < 0 {
		panic("kafkaworker: no metric definition for " + name)
	}
	return metricDefs[i]
}

// metricDesc is the prometheus.Desc of a metric from its definition, for
// custom collectors.
func metricDesc(name string) *prometheus.Desc {
	d := metricDef(name)
	return prometheus.NewDesc(d.Name, d.Help, d.Labels, nil)
}

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
		d := metricDef(name)
		return r(prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)).(*prometheus.CounterVec)
	}
	gauge := func(name string) *prometheus.GaugeVec {
		d := metricDef(name)
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
	m.commits.WithLabelValues(m.group, resultLabels[r]).Inc()
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
