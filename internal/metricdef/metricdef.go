// Package metricdef is the one table of the Prometheus metrics a worker
// exports: names, kinds, help, labels and the closed sets of label values.
// The worker builds its collectors from it, and the dashboard's test checks
// the dashboard's queries against it.
package metricdef

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, all in the kafkaworker namespace. The Grafana dashboard in
// dashboards/ uses exactly these.
const (
	MessagesConsumed   = "kafkaworker_messages_consumed_total"
	MessagesProcessed  = "kafkaworker_messages_processed_total"
	ProcessingDuration = "kafkaworker_processing_duration_seconds"
	ProcessingDelay    = "kafkaworker_processing_delay_seconds"
	ConsumerLag        = "kafkaworker_consumer_lag"
	InFlight           = "kafkaworker_in_flight_messages"
	AssignedPartitions = "kafkaworker_assigned_partitions"
	Rebalances         = "kafkaworker_rebalances_total"
	Commits            = "kafkaworker_commits_total"
	ForwardErrors      = "kafkaworker_forward_errors_total"
	BuildInfo          = "kafkaworker_build_info"
	OldestInFlightAge  = "kafkaworker_oldest_in_flight_age_seconds"
	IntakeBlocked      = "kafkaworker_intake_blocked_total"
	BatchMessages      = "kafkaworker_batch_messages"
	BatchDuration      = "kafkaworker_batch_duration_seconds"
)

// Kind is how Prometheus types a metric.
type Kind string

// The kinds of the worker's metrics.
const (
	KindCounter   Kind = "counter"
	KindGauge     Kind = "gauge"
	KindHistogram Kind = "histogram"
)

// Def describes one metric the worker exports: the worker builds its
// collectors from these definitions, and the dashboard's test checks the
// dashboard's queries against them.
type Def struct {
	Name   string
	Kind   Kind
	Help   string
	Labels []string
	// Values lists, for a label with a closed set of values, every value
	// the worker sets.
	Values map[string][]string
}

// Result is the outcome of a delivery, the result label of the processed
// and duration metrics: every delivery gets exactly one.
type Result int

const (
	Success    Result = iota // the handler returned nil
	Error                    // it failed; the message stays for another delivery in place
	Retry                    // it failed and the message was published to a retry tier
	DeadLetter               // it failed and the message was published to the dead-letter topic
	NumResults
)

// resultLabels are the values of the result label, indexed by result.
var resultLabels = [NumResults]string{"success", "error", "retry", "dead_letter"}

// defs is the one table of the worker's metrics.
var defs = []Def{
	{MessagesConsumed, KindCounter, "Messages taken from Kafka.", []string{"group", "topic"}, nil},
	{MessagesProcessed, KindCounter, "Deliveries to the handler by outcome: success, error (retried in place), retry (sent to a retry topic), dead_letter.",
		[]string{"group", "topic", "result"}, map[string][]string{"result": resultLabels[:]}},
	{ProcessingDuration, KindHistogram, "Time the handler took per delivery, by outcome.",
		[]string{"group", "topic", "result"}, map[string][]string{"result": resultLabels[:]}},
	{ProcessingDelay, KindHistogram, "Time from the message's timestamp to the start of its first delivery on this topic.", []string{"group", "topic"}, nil},
	{ConsumerLag, KindGauge, "High watermark minus the committable offset, per assigned partition.", []string{"group", "topic", "partition"}, nil},
	{InFlight, KindGauge, "Messages held in memory: taken from Kafka and not yet done (queued, running, backing off, or waiting for a due time).", []string{"group"}, nil},
	{AssignedPartitions, KindGauge, "Partitions currently assigned.", []string{"group"}, nil},
	{Rebalances, KindCounter, "Rebalances this worker took part in.", []string{"group"}, nil},
	{Commits, KindCounter, "Offset commit requests by result.", []string{"group", "result"},
		map[string][]string{"result": {resultLabels[Success], resultLabels[Error]}}},
	{ForwardErrors, KindCounter, "Failed publishes to retry and dead-letter topics, by destination topic and reason (too_large, invalid, unauthorized, unknown_topic, other).",
		[]string{"group", "topic", "reason"}, map[string][]string{"reason": forwardErrorReasons}},
	{BuildInfo, KindGauge, "Always 1; labels name the versions.", []string{"version", "go_version", "sarama_version"}, nil},
	{OldestInFlightAge, KindGauge, "Seconds since the oldest unfinished message of the partition was taken from Kafka; 0 when none is.", []string{"group", "topic", "partition"}, nil},
	{IntakeBlocked, KindCounter, "Times a partition stopped taking messages: reason in_flight (WORKER_MAX_IN_FLIGHT messages held) or done_set (the record of finished offsets neared the commit metadata limit).",
		[]string{"group", "topic", "reason"}, map[string][]string{"reason": {"in_flight", "done_set"}}},
	{BatchMessages, KindHistogram, "Messages per call of a batch handler (worker.NewBatch).", []string{"group", "topic"}, nil},
	{BatchDuration, KindHistogram, "Time a batch handler took per call, by outcome: success (every message done), partial (a *BatchError: some failed), error (all failed).",
		[]string{"group", "topic", "result"}, map[string][]string{"result": BatchResultLabels[:]}},
}

// BatchResult is the outcome of one call of a batch handler, the result
// label of BatchDuration.
type BatchResult int

const (
	BatchSuccess BatchResult = iota // every message done
	BatchPartial                    // a *handler.BatchError: some failed
	BatchFailed                     // every message failed
)

// BatchResultLabels are the values of BatchDuration's result label,
// indexed by BatchResult.
var BatchResultLabels = [...]string{"success", "partial", "error"}

// Label is r's value of the result label.
func (r BatchResult) Label() string { return BatchResultLabels[r] }

// Defs returns the definitions of every metric the worker exports, a
// copy the caller may change.
func Defs() []Def { return copyDefs(defs) }

// copyDefs is a deep copy of a table.
func copyDefs(defs []Def) []Def {
	out := make([]Def, len(defs))
	for i, d := range defs {
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

// Names returns the name of every metric the worker exports.
func Names() []string {
	out := make([]string, len(defs))
	for i, d := range defs {
		out[i] = d.Name
	}
	return out
}

// ResultLabels returns the values of the result label of the processed and
// duration metrics, one per outcome of a delivery.
func ResultLabels() []string { return slices.Clone(resultLabels[:]) }

// Lookup returns the definition of the metric called name, the worker's
// or a producer's; the tables hold every name the module uses, so a miss
// is a programming error.
func Lookup(name string) Def {
	for _, table := range [][]Def{defs, producerDefs} {
		if i := slices.IndexFunc(table, func(d Def) bool { return d.Name == name }); i >= 0 {
			return table[i]
		}
	}
	panic("kafkaworker: no metric definition for " + name)
}

// Desc is the prometheus.Desc of a metric from its definition, for
// custom collectors.
func Desc(name string) *prometheus.Desc {
	d := Lookup(name)
	return prometheus.NewDesc(d.Name, d.Help, d.Labels, nil)
}

// Label is r's value of the result label.
func (r Result) Label() string { return resultLabels[r] }

// The values of the reason label of ForwardErrors: why a publish to a retry
// or dead-letter topic failed. Each but ReasonOther names a failure that
// retrying the publish cannot fix until someone changes the topic, the ACLs
// or the worker's settings.
const (
	ReasonTooLarge     = "too_large"     // the record exceeds the producer's Producer.MaxMessageBytes or the topic's max.message.bytes
	ReasonInvalid      = "invalid"       // the broker refused the record as invalid
	ReasonUnauthorized = "unauthorized"  // the worker may not write to the topic (or, idempotently, to the cluster)
	ReasonUnknownTopic = "unknown_topic" // the topic does not exist
	ReasonOther        = "other"         // anything else: broker down, timeouts, leadership moves, ...
)

var forwardErrorReasons = []string{ReasonTooLarge, ReasonInvalid, ReasonUnauthorized, ReasonUnknownTopic, ReasonOther}

// ForwardErrorReasons returns every value of the reason label of
// ForwardErrors, a copy the caller may change.
func ForwardErrorReasons() []string { return slices.Clone(forwardErrorReasons) }
