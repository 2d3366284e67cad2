package telemetry

import "time"

// The status page's samples. Each mirrors, field for field, a public type
// of package worker (PartitionStatus, FailureStatus, RatePoint), which
// converts them with a plain type conversion: a field added on one side
// only does not compile.

// PartitionSample is one partition's state, sampled at its lag tick: see
// worker.PartitionStatus for what each field means.
type PartitionSample struct {
	Topic            string
	Partition        int32
	Tier             int
	CommittedOffset  *int64
	EndOffset        int64
	Lag              int64
	Held             int
	InFlight         int
	OldestOffset     *int64
	OldestAgeSeconds float64
	Stuck            bool
	Paused           bool
	IntakeBlocked    string
	NextDue          *time.Time
	SampledAt        time.Time
}

// Failure is a failed delivery: see worker.FailureStatus.
type Failure struct {
	Time             time.Time
	Topic            string
	Partition        int32
	Offset           int64
	Attempt          int
	ErrorType        string
	Error            string
	Destination      string
	Tier             int
	DestinationTopic string
}

// Destinations of a Failure; worker.Destination* are the same values.
const (
	DestinationInPlace    = "in_place"
	DestinationRetryTier  = "retry_tier"
	DestinationDeadLetter = "dead_letter"
)

// RatePoint is deliveries per second over the interval ending at Time: see
// worker.RatePoint.
type RatePoint struct {
	Time       time.Time
	Handled    float64
	Success    float64
	Error      float64
	Retry      float64
	DeadLetter float64
}
