package worker

import (
	"log/slog"

	"github.com/kafkaworker/kafkaworker/internal/envconf"
)

// LogValue lets a Config be logged with slog. It lists fields by name from an
// allow-list, so credentials added to Config never reach a log: the
// password shows as [set]. Every setting is listed (TestConfigPrintsEverySetting).
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers), slog.String("group", c.GroupID), slog.Any("topics", c.Topics),
		slog.String("client_id", c.ClientID), slog.String("version", c.Version),
		slog.String("initial_offset", string(c.InitialOffset)), slog.String("rebalance_strategy", string(c.RebalanceStrategy)),
		slog.Duration("session_timeout", c.SessionTimeout), slog.Duration("heartbeat_interval", c.HeartbeatInterval),
		slog.Duration("rebalance_timeout", c.RebalanceTimeout), slog.Duration("metadata_refresh", c.MetadataRefresh),
		slog.Duration("connect_timeout", c.ConnectTimeout), slog.String("instance_id", c.InstanceID),
		slog.String("ordering", string(c.Ordering)), slog.Int("concurrency", c.Concurrency), slog.Int("max_in_flight", c.MaxInFlight),
		slog.Int("batch_max", c.BatchMax), slog.Duration("batch_wait", c.BatchWait),
		slog.Duration("commit_interval", c.CommitInterval), slog.Bool("exactly_once", c.ExactlyOnce), slog.Duration("stuck_after", c.StuckAfter),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Int("retry_local_attempts", c.RetryLocalAttempts),
		slog.Duration("retry_backoff_initial", c.RetryBackoffInitial), slog.Duration("retry_backoff_max", c.RetryBackoffMax),
		slog.Any("retry_topic_delays", c.RetryTopicDelays), slog.String("retry_topic_template", c.RetryTopicTemplate),
		slog.Bool("dlq_enabled", c.DLQEnabled), slog.String("dlq_topic_template", c.DLQTopicTemplate),
		slog.Bool("retry_create_topics", c.RetryCreateTopics), slog.String("metrics_addr", c.MetricsAddr),
		slog.GroupAttrs("security", c.logSecurity()...),
	)
}

// String renders the same allow-listed fields as LogValue, so fmt's %v and
// %+v do not print credentials either.
func (c Config) String() string { return envconf.Render("worker.Config", c.LogValue().Group()) }

// GoString makes %#v print the same redacted form as String.
func (c Config) GoString() string { return c.String() }

// effectiveConfig is the worker's Config with what it leaves to sarama
// (0 durations, an empty version) replaced by the values sarama runs with,
// and Kafka's aliases resolved: what the start-up line prints, so an
// operator reads the settings in force.
func (w *Worker) effectiveConfig() Config {
	c := w.cfg
	g := w.sarama.Consumer.Group
	c.SessionTimeout, c.HeartbeatInterval, c.RebalanceTimeout = g.Session.Timeout, g.Heartbeat.Interval, g.Rebalance.Timeout
	c.MetadataRefresh = w.sarama.Metadata.RefreshFrequency
	c.Version = w.sarama.Version.String()
	c.InitialOffset = c.InitialOffset.canonical()
	return c
}
