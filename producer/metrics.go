package producer

// Metric names, all in the kafkaworker namespace: what alerts and
// dashboards query. The README's Producing section says what each counts;
// labels are bounded (topic, reason, result), never keys or error text.
const (
	// MetricSent counts the messages the broker acknowledged, by topic.
	MetricSent = "kafkaworker_producer_messages_sent_total"
	// MetricErrors counts failed sends by topic and reason: too_large,
	// invalid, unauthorized, unknown_topic, closed, canceled or other.
	MetricErrors = "kafkaworker_producer_errors_total"
	// MetricSendDuration is the time from a send to its acknowledgement or
	// failure, by topic and result (success, error).
	MetricSendDuration = "kafkaworker_producer_send_duration_seconds"
)
