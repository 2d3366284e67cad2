package worker

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
	MetricBatchMessages      = "kafkaworker_batch_messages"
	MetricBatchDuration      = "kafkaworker_batch_duration_seconds"
)
