package worker

import (
	"slices"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// The public metric names are exactly the table's.
func TestPublicMetricNamesAreTheTables(t *testing.T) {
	t.Parallel()
	public := []string{MetricMessagesConsumed, MetricMessagesProcessed, MetricProcessingDuration, MetricProcessingDelay,
		MetricConsumerLag, MetricInFlight, MetricAssignedPartitions, MetricRebalances, MetricCommits, MetricForwardErrors,
		MetricBuildInfo, MetricOldestInFlightAge, MetricIntakeBlocked, MetricBatchMessages, MetricBatchDuration}
	table := metricdef.Names()
	slices.Sort(public)
	slices.Sort(table)
	if !slices.Equal(public, table) {
		t.Fatalf("worker's Metric* constants %v differ from the table %v", public, table)
	}
}
