package telemetry

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

// durationBuckets are OpenTelemetry's advisory buckets for durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// numBuckets is len(durationBuckets), as a constant for array sizes.
const numBuckets = 14

// Metrics holds the worker's Prometheus collectors. Every label value is
// bounded: group, topic, partition, result; never keys, offsets or error
// text. Two workers on one registry share the collectors, told apart by
// the group label; the gauges they might share move by Add, not Set.
type Metrics struct {
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
	board         *Board                 // what the status page shows; this worker's own
	batchSize     *prometheus.HistogramVec
	batchDuration *prometheus.HistogramVec
}

// batchSizeBuckets are the buckets of the batch size histogram.
var batchSizeBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}

func NewMetrics(reg prometheus.Registerer, group string) (*Metrics, error) {
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
	histogram := func(name string, buckets []float64) *prometheus.HistogramVec {
		d := metricdef.Lookup(name)
		return r(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: buckets}, d.Labels)).(*prometheus.HistogramVec)
	}
	m := &Metrics{
		group:         group,
		board:         newBoard(),
		deliveries:    r(newDeliveryCollector()).(*deliveryCollector),
		lag:           gauge(metricdef.ConsumerLag),
		inFlight:      gauge(metricdef.InFlight).With(g),
		assigned:      gauge(metricdef.AssignedPartitions).With(g),
		rebalances:    counter(metricdef.Rebalances).With(g),
		commits:       counter(metricdef.Commits),
		forwardErrors: counter(metricdef.ForwardErrors),
		oldestAge:     gauge(metricdef.OldestInFlightAge),
		intakeBlocked: counter(metricdef.IntakeBlocked),
		batchSize:     histogram(metricdef.BatchMessages, batchSizeBuckets),
		batchDuration: histogram(metricdef.BatchDuration, durationBuckets),
	}
	gauge(metricdef.BuildInfo).WithLabelValues(Versions()).Set(1)
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

// Versions returns this module's, Go's and sarama's versions.
func Versions() (module, goVersion, saramaVersion string) {
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

// ObserveBatch records one call of a batch handler on topic: its size, how
// long it took and its outcome.
func (m *Metrics) ObserveBatch(topic string, size int, took time.Duration, result metricdef.BatchResult) {
	if m == nil {
		return
	}
	m.batchSize.WithLabelValues(m.group, topic).Observe(float64(size))
	m.batchDuration.WithLabelValues(m.group, topic, result.Label()).Observe(took.Seconds())
}

// ForPartition returns the per-message stats of a newly claimed partition,
// tracked by the collector until retire.
func (m *Metrics) ForPartition(topic string) *Stats {
	if m == nil {
		return nil
	}
	s := newStats(m.group, topic)
	m.deliveries.track(s)
	return s
}

// Commit counts one offset commit request by its result.
func (m *Metrics) Commit(ok bool) {
	if m == nil {
		return
	}
	r := metricdef.Success
	if !ok {
		r = metricdef.Error
	}
	m.commits.WithLabelValues(m.group, r.Label()).Inc()
}

// NoteGeneration counts a rebalance the first time a generation is seen.
func (m *Metrics) NoteGeneration(gen int32) {
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

// SetLag sets a partition's lag gauge.
func (m *Metrics) SetLag(topic string, partition int32, lag int64) {
	if m != nil {
		m.lag.WithLabelValues(m.group, topic, strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
	}
}

// DropLag removes a released partition's gauges and status row.
func (m *Metrics) DropLag(topic string, partition int32) {
	if m != nil {
		m.lag.DeleteLabelValues(m.group, topic, strconv.Itoa(int(partition)))
		m.oldestAge.DeleteLabelValues(m.group, topic, strconv.Itoa(int(partition)))
		m.board.dropPartition(topic, partition) // a released partition leaves the status page too
	}
}

// SetOldestAge sets a partition's oldest-in-flight-age gauge.
func (m *Metrics) SetOldestAge(topic string, partition int32, age time.Duration) {
	if m != nil {
		m.oldestAge.WithLabelValues(m.group, topic, strconv.Itoa(int(partition))).Set(age.Seconds())
	}
}

// NoteIntakeBlocked counts that a partition's intake stopped for reason.
func (m *Metrics) NoteIntakeBlocked(topic, reason string) {
	if m != nil {
		m.intakeBlocked.WithLabelValues(m.group, topic, reason).Inc()
	}
}

// AddAssigned moves the assigned-partitions gauge by n.
func (m *Metrics) AddAssigned(n int) {
	if m != nil {
		m.assigned.Add(float64(n))
	}
}

// AddInFlight moves the in-flight gauge by delta: it is shared by every
// partition (and by workers of the same group on one registry), so it is
// adjusted, never set.
func (m *Metrics) AddInFlight(delta int64) {
	if m != nil && delta != 0 {
		m.inFlight.Add(float64(delta))
	}
}

// ForwardError counts a failed publish to topic, a retry or dead-letter
// topic, for reason (one of metricdef.ForwardErrorReasons).
func (m *Metrics) ForwardError(topic, reason string) {
	if m != nil {
		m.forwardErrors.WithLabelValues(m.group, topic, reason).Inc()
	}
}

// Retire folds a released partition's stats into the totals.
func (m *Metrics) Retire(s *Stats) {
	if m != nil && s != nil {
		m.deliveries.retire(s)
	}
}

// Board is what the status page shows of this worker.
func (m *Metrics) Board() *Board { return m.board }

// NoteFailure records a failed delivery for the status page.
func (m *Metrics) NoteFailure(f Failure) {
	if m != nil && m.board != nil {
		m.board.AddFailure(f)
	}
}

// Totals sums this worker's consumed messages and deliveries by outcome,
// live and released partitions alike, as a scrape does.
func (m *Metrics) Totals() (consumed uint64, processed [metricdef.NumResults]uint64) {
	return m.deliveries.groupTotals(m.group)
}
