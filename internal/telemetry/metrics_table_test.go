package telemetry

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
	if _, err := NewMetrics(reg, "g"); err != nil {
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

// A producer registers exactly the metrics of its table; a second
// producer on the same registry takes the first's collectors; and no name
// is both the worker's and a producer's.
func TestProducerCollectorsFollowTheirTable(t *testing.T) {
	t.Parallel()
	reg := &descRecorder{Registry: prometheus.NewRegistry()}
	if _, err := NewProducerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range metricdef.ProducerDefs() {
		want = append(want, prometheus.NewDesc(d.Name, d.Help, d.Labels, nil).String())
	}
	got := slices.Clone(reg.descs)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("registered:\n%v\nthe table:\n%v", got, want)
	}
	if _, err := NewProducerMetrics(reg); err != nil {
		t.Fatalf("a second producer on the registry: %v", err)
	}
	for _, name := range metricdef.ProducerNames() {
		if slices.Contains(metricdef.Names(), name) {
			t.Errorf("%s is in both tables", name)
		}
	}
}
