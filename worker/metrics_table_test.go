package worker

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// descRecorder records the descriptions of what is registered with it.
type descRecorder struct {
	*prometheus.Registry
	descs []string
}

func (d *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	c.Describe(ch)
	close(ch)
	for desc := range ch {
		d.descs = append(d.descs, desc.String())
	}
	return d.Registry.Register(c)
}

// The worker registers exactly the metrics of its table, each with the
// table's name, help and labels.
func TestCollectorsFollowTheMetricTable(t *testing.T) {
	t.Parallel()
	reg := &descRecorder{Registry: prometheus.NewRegistry()}
	if _, err := newMetrics(reg, "g"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range metricdef.Defs() {
		want = append(want, prometheus.NewDesc(d.Name, d.Help, d.Labels, nil).String())
	}
	slices.Sort(want)
	slices.Sort(reg.descs)
	if !slices.Equal(reg.descs, want) {
		t.Fatalf("registered:\n%v\nthe table:\n%v", reg.descs, want)
	}
}

// The public metric names are exactly the table's.
func TestPublicMetricNamesAreTheTables(t *testing.T) {
	t.Parallel()
	public := []string{MetricMessagesConsumed, MetricMessagesProcessed, MetricProcessingDuration, MetricProcessingDelay,
		MetricConsumerLag, MetricInFlight, MetricAssignedPartitions, MetricRebalances, MetricCommits, MetricForwardErrors,
		MetricBuildInfo, MetricOldestInFlightAge, MetricIntakeBlocked}
	table := metricdef.Names()
	slices.Sort(public)
	slices.Sort(table)
	if !slices.Equal(public, table) {
		t.Fatalf("worker's Metric* constants %v differ from the table %v", public, table)
	}
}
