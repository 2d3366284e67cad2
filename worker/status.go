package worker

import "time"

// Status is what /status.json returns and /status renders: a worker's
// state, sampled from its own bookkeeping (never from message payloads, and
// not by re-reading its Prometheus output). The JSON field names are part of
// the documented interface, for scripts and tools; fields are added, never
// renamed. Times are RFC 3339 in UTC, durations are in seconds.
type Status struct {
	// GeneratedAt is when this status was put together ("generated_at").
	GeneratedAt time.Time `json:"generated_at"`
	// Worker is the process and its group membership ("worker").
	Worker WorkerStatus `json:"worker"`
	// Throughput is the deliveries so far and their per-second rates over
	// the last five minutes ("throughput").
	Throughput ThroughputStatus `json:"throughput"`
	// Partitions lists the partitions this member holds, source topics and
	// retry tiers alike, sorted by topic and partition ("partitions"). A
	// partition appears at the first lag tick after it was claimed (every
	// WORKER_COMMIT_INTERVAL) and disappears when it is released.
	Partitions []PartitionStatus `json:"partitions"`
	// RetryTiers lists every retry tier of every source topic, in tier
	// order ("retry_tiers"); empty without RETRY_TOPIC_DELAYS.
	RetryTiers []TierStatus `json:"retry_tiers"`
	// Failures are the last 20 failed deliveries, newest first ("failures").
	Failures []FailureStatus `json:"failures"`
	// Config is the effective configuration as Config.LogValue lists it:
	// an allow-list, with secrets shown only as [set] ("config").
	Config []ConfigEntry `json:"config"`
}

// WorkerStatus is the "worker" object of Status.
type WorkerStatus struct {
	Group         string `json:"group"`
	MemberID      string `json:"member_id"`  // "" before the first session
	Generation    int32  `json:"generation"` // the group generation of the latest session seen
	ClientID      string `json:"client_id"`
	Version       string `json:"version"` // this module's version ("devel" in a work tree)
	GoVersion     string `json:"go_version"`
	SaramaVersion string `json:"sarama_version"`
	// StartedAt is when the worker was created (worker.New).
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	// Ready and Healthy are what /readyz and /healthz answer; the reasons
	// say why not, and are empty when they are true.
	Ready         bool   `json:"ready"`
	ReadyReason   string `json:"ready_reason,omitempty"`
	Healthy       bool   `json:"healthy"`
	HealthyReason string `json:"healthy_reason,omitempty"`
	// StuckAfterSeconds is WORKER_STUCK_AFTER; 0 when it is off.
	StuckAfterSeconds float64 `json:"stuck_after_seconds"`
}

// ThroughputStatus is the "throughput" object of Status.
type ThroughputStatus struct {
	// Consumed counts the messages taken from Kafka since the worker started.
	Consumed uint64 `json:"consumed"`
	// Totals counts deliveries to the handler since the worker started, by
	// outcome, exactly (read when the status is generated).
	Totals DeliveryCounts `json:"totals"`
	// WindowSeconds is the span Rates covers at most: 300.
	WindowSeconds int `json:"window_seconds"`
	// Rates are deliveries per second, about one point a second, oldest
	// first; each point averages the interval since the one before.
	Rates []RatePoint `json:"rates"`
}

// DeliveryCounts splits deliveries by outcome, the result label of
// kafkaworker_messages_processed_total. Handled is the sum of the others.
type DeliveryCounts struct {
	Handled    uint64 `json:"handled"`
	Success    uint64 `json:"success"`     // the handler returned nil
	Error      uint64 `json:"error"`       // failed; retried in place
	Retry      uint64 `json:"retry"`       // failed; published to a retry tier
	DeadLetter uint64 `json:"dead_letter"` // failed; published to the dead-letter topic
}

// RatePoint is one point of ThroughputStatus.Rates, in deliveries per
// second over the interval ending at Time.
type RatePoint struct {
	Time       time.Time `json:"time"`
	Handled    float64   `json:"handled"`
	Success    float64   `json:"success"`
	Error      float64   `json:"error"`
	Retry      float64   `json:"retry"`
	DeadLetter float64   `json:"dead_letter"`
}

// PartitionStatus is one element of Status.Partitions, sampled at the
// partition's lag tick.
type PartitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Tier is the retry tier the topic is (1-based); 0 for a source topic.
	Tier int `json:"tier"`
	// CommittedOffset is where the group resumes the partition: the offset
	// the coordinator last acknowledged from this member, or before its
	// first commit the offset the claim started at; null when that is not
	// known (a sentinel).
	CommittedOffset *int64 `json:"committed_offset"`
	// EndOffset is the partition's high watermark as last fetched.
	EndOffset int64 `json:"end_offset"`
	// Lag is EndOffset minus the committable offset, as the
	// kafkaworker_consumer_lag gauge shows it.
	Lag int64 `json:"lag"`
	// Held counts messages taken from Kafka and not done (queued, running,
	// backing off, waiting for a due time, or done behind an unfinished one).
	Held int `json:"held"`
	// InFlight counts the partition's handlers running now.
	InFlight int `json:"in_flight"`
	// OldestOffset is the oldest unfinished message's offset, and
	// OldestAgeSeconds how long ago it was taken from Kafka; null and 0 when
	// nothing is held.
	OldestOffset     *int64  `json:"oldest_offset"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Stuck reports that the oldest message is held past WORKER_STUCK_AFTER.
	Stuck bool `json:"stuck"`
	// Paused reports that fetching is paused (the in-flight budget stayed
	// used up); IntakeBlocked says why intake stopped ("in_flight" or
	// "done_set"), empty while it runs.
	Paused        bool   `json:"paused"`
	IntakeBlocked string `json:"intake_blocked,omitempty"`
	// NextDue is the earliest due time of the messages a retry tier
	// partition holds waiting for it (those not queued behind an earlier
	// message of their key); null when none waits.
	NextDue *time.Time `json:"next_due"`
	// SampledAt is when these numbers were read.
	SampledAt time.Time `json:"sampled_at"`
}

// TierStatus is one element of Status.RetryTiers. Its numbers add up the
// tier's partitions this member holds; other members hold the rest.
type TierStatus struct {
	Source       string  `json:"source"`
	Tier         int     `json:"tier"` // 1-based
	Topic        string  `json:"topic"`
	DelaySeconds float64 `json:"delay_seconds"`
	// AssignedPartitions counts the tier's partitions this member holds.
	AssignedPartitions int `json:"assigned_partitions"`
	// Waiting counts messages in those partitions not yet done: their lag.
	Waiting int64 `json:"waiting"`
	// Held counts those already taken into memory, waiting for their due time.
	Held int `json:"held"`
	// NextDue is the earliest due time of a held message; null when none.
	NextDue *time.Time `json:"next_due"`
}

// FailureStatus is one element of Status.Failures: a failed delivery. It
// never carries the message's key, value or headers.
type FailureStatus struct {
	Time      time.Time `json:"time"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	// Attempt counts deliveries of the message so far, over every hop.
	Attempt int `json:"attempt"`
	// ErrorType is handler.ErrorType of the error; Error is its text, cut
	// to its first 200 characters.
	ErrorType string `json:"error_type"`
	Error     string `json:"error"`
	// Destination is where the message went: "in_place" (retried here after
	// a backoff), "retry_tier" (published to tier Tier, topic
	// DestinationTopic) or "dead_letter" (published to DestinationTopic).
	// A publish that fails is logged and retried, and is not listed again.
	Destination      string `json:"destination"`
	Tier             int    `json:"tier,omitempty"`
	DestinationTopic string `json:"destination_topic,omitempty"`
}

// Destinations of a FailureStatus.
const (
	DestinationInPlace    = "in_place"
	DestinationRetryTier  = "retry_tier"
	DestinationDeadLetter = "dead_letter"
)

// ConfigEntry is one setting of Status.Config. Nested groups of
// Config.LogValue are flattened with a dot, e.g. "security.sasl_password".
type ConfigEntry struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}
