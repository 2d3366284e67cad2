package metricdef

import "slices"

// The metrics of package producer: a table of their own, apart from the
// worker's (Defs, Names), because a worker does not export them and its
// dashboard does not show them. Lookup and Desc find both tables.
const (
	ProducerSent         = "kafkaworker_producer_messages_sent_total"
	ProducerErrors       = "kafkaworker_producer_errors_total"
	ProducerSendDuration = "kafkaworker_producer_send_duration_seconds"
)

// The values of the reason label of ProducerErrors that are the
// producer's own; the others are ForwardErrors' (too_large, invalid,
// unauthorized, unknown_topic, other), which classify the broker's answers
// the same way.
const (
	// ReasonClosed: sent after Close began, or still unacknowledged when
	// Close's deadline passed.
	ReasonClosed = "closed"
	// ReasonCanceled: the send's context ended before the message was
	// handed over (the producer's buffers were full).
	ReasonCanceled = "canceled"
)

// producerErrorReasons are the values of ProducerErrors' reason label.
var producerErrorReasons = []string{ReasonTooLarge, ReasonInvalid, ReasonUnauthorized, ReasonUnknownTopic, ReasonClosed, ReasonCanceled, ReasonOther}

// sendResults are the values of ProducerSendDuration's result label.
var sendResults = []string{resultLabels[Success], resultLabels[Error]}

// producerDefs is the one table of the producer's metrics.
var producerDefs = []Def{
	{ProducerSent, KindCounter, "Messages the producer sent and the broker acknowledged, by topic.", []string{"topic"}, nil},
	{ProducerErrors, KindCounter, "Messages the producer failed to send, by topic and reason (too_large, invalid, unauthorized, unknown_topic, closed, canceled, other).",
		[]string{"topic", "reason"}, map[string][]string{"reason": producerErrorReasons}},
	{ProducerSendDuration, KindHistogram, "Time from a send to the broker's acknowledgement or the failure, by topic and result (success, error).",
		[]string{"topic", "result"}, map[string][]string{"result": sendResults}},
}

// ProducerDefs returns the definitions of every metric a producer
// exports, a copy the caller may change.
func ProducerDefs() []Def { return copyDefs(producerDefs) }

// ProducerNames returns the name of every metric a producer exports.
func ProducerNames() []string {
	out := make([]string, len(producerDefs))
	for i, d := range producerDefs {
		out[i] = d.Name
	}
	return out
}

// ProducerErrorReasons returns every value of the reason label of
// ProducerErrors, a copy the caller may change.
func ProducerErrorReasons() []string { return slices.Clone(producerErrorReasons) }
