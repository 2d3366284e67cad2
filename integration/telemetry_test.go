package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/middleware"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// After a known set of messages (five succeed, one fails once, one is
// dead-lettered) every metric has its exact expected value, lag reaches 0,
// and the partition's lag series is gone once it is released.
func TestMetricsHaveExactValues(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	var recs []kafkatest.Record
	for _, v := range []string{"ok1", "ok2", "flaky", "ok3", "poison", "ok4", "ok5"} {
		recs = append(recs, kafkatest.Record{Topic: b.topic, Key: []byte(v), Value: []byte(v)})
	}
	if _, err := b.cluster.Produce(ctx(t), recs...); err != nil {
		t.Fatal(err)
	}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		switch string(m.Value) {
		case "flaky":
			if retry.Attempt(ctx) == 1 {
				return errors.New("once")
			}
		case "poison":
			return retry.Permanent(errors.New("bad"))
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	cfg := b.retryConfig(3) // no tiers: in place, then the dead-letter topic
	w := start(t, cfg, h, worker.WithRegisterer(reg))

	b.waitRecords(t, b.dlqTopic(), 1)
	b.waitCommitted(t, 30*time.Second)
	g, topic := b.group, b.topic
	lag := func() float64 { return gauge(t, reg, worker.MetricConsumerLag, g, topic, "0") }
	testutil.WaitFor(t, 30*time.Second, "lag 0", func() bool { return lag() == 0 })

	for _, c := range []struct {
		name   string
		got    float64
		expect float64
	}{
		{"consumed", counterVal(t, reg, worker.MetricMessagesConsumed, g, topic), 7},
		{"processed success", counterVal(t, reg, worker.MetricMessagesProcessed, g, topic, "success"), 6},
		{"processed error", counterVal(t, reg, worker.MetricMessagesProcessed, g, topic, "error"), 1},
		{"processed retry", counterVal(t, reg, worker.MetricMessagesProcessed, g, topic, "retry"), 0},
		{"processed dead_letter", counterVal(t, reg, worker.MetricMessagesProcessed, g, topic, "dead_letter"), 1},
		{"duration count success", histCount(t, reg, worker.MetricProcessingDuration, g, topic, "success"), 6},
		{"duration count error", histCount(t, reg, worker.MetricProcessingDuration, g, topic, "error"), 1},
		{"duration count dead_letter", histCount(t, reg, worker.MetricProcessingDuration, g, topic, "dead_letter"), 1},
		{"delay count", histCount(t, reg, worker.MetricProcessingDelay, g, topic), 7},
		{"in flight", gauge(t, reg, worker.MetricInFlight, g), 0},
		{"assigned partitions", gauge(t, reg, worker.MetricAssignedPartitions, g), 1},
		{"rebalances", counterVal(t, reg, worker.MetricRebalances, g), 1},
		{"commit errors", counterVal(t, reg, worker.MetricCommits, g, "error"), 0},
		{"build info", gauge(t, reg, worker.MetricBuildInfo, "*"), 1},
	} {
		if c.got != c.expect {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.expect)
		}
	}
	if n := counterVal(t, reg, worker.MetricCommits, g, "success"); n < 1 {
		t.Errorf("successful commits = %v, want at least 1", n)
	}
	if n := series(t, reg, worker.MetricForwardErrors); n != 0 {
		t.Errorf("%d forward error series, want none", n)
	}
	w.stop(t)
	if n := series(t, reg, worker.MetricConsumerLag); n != 0 {
		t.Errorf("%d lag series after the partition was released, want 0", n)
	}
	if got := gauge(t, reg, worker.MetricAssignedPartitions, g); got != 0 {
		t.Errorf("assigned partitions after stop = %v, want 0", got)
	}
}

// Two workers on one registry (and on the default one) neither panic nor
// fail: they share the collectors, told apart by the group label.
func TestTwoWorkersShareARegistry(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	reg := prometheus.NewRegistry()
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	for range 2 {
		for _, r := range []prometheus.Registerer{reg, prometheus.DefaultRegisterer} {
			if _, err := worker.New(b.config(), h, worker.WithRegisterer(r)); err != nil {
				t.Fatalf("second worker on one registry: %v", err)
			}
		}
	}
}

// One span per delivery with the messaging attributes; a produced
// traceparent becomes the parent (and a link); a message that goes through a
// retry tier keeps all its deliveries in one trace.
func TestTracingSpans(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const parentTrace = "0af7651916cd43dd8448eb211c80319c"
	tp := "00-" + parentTrace + "-b7ad6b7169203331-01"
	if _, err := b.cluster.Produce(ctx(t),
		kafkatest.Record{Topic: b.topic, Key: []byte("k1"), Value: []byte("traced"), Headers: map[string]string{"traceparent": tp}},
		kafkatest.Record{Topic: b.topic, Value: []byte("retried")},
	); err != nil {
		t.Fatal(err)
	}
	var got deliveries
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Value) == "retried" && got.add(ctx, m) == 1 {
			return errors.New("try the tier")
		}
		return nil
	})
	rec := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	w := start(t, b.retryConfig(1, 100*time.Millisecond), h,
		worker.WithTracerProvider(provider), worker.WithPropagator(propagation.TraceContext{}))
	testutil.WaitFor(t, 30*time.Second, "three deliveries ended", func() bool { return len(rec.Ended()) >= 3 })
	w.stop(t)

	var traced, retried []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		attrs := map[attribute.Key]attribute.Value{}
		for _, a := range s.Attributes() {
			attrs[a.Key] = a.Value
		}
		if s.SpanKind() != trace.SpanKindConsumer || s.Name() != "process "+s.Attributes()[3].Value.AsString() {
			t.Errorf("span %q kind %v: want a CONSUMER span named after its topic", s.Name(), s.SpanKind())
		}
		for k, want := range map[attribute.Key]string{
			"messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
			"messaging.consumer.group.name": b.group, "messaging.destination.partition.id": "0",
		} {
			if attrs[k].AsString() != want {
				t.Errorf("span %q attribute %s = %q, want %q", s.Name(), k, attrs[k].AsString(), want)
			}
		}
		if _, ok := attrs["messaging.kafka.offset"]; !ok {
			t.Errorf("span %q has no messaging.kafka.offset", s.Name())
		}
		if attrs["messaging.kafka.message.key"].AsString() == "k1" {
			traced = append(traced, s)
		} else {
			if _, ok := attrs["messaging.kafka.message.key"]; ok {
				t.Errorf("a message without a key must not get messaging.kafka.message.key")
			}
			retried = append(retried, s)
		}
	}
	if len(traced) != 1 || traced[0].Parent().TraceID().String() != parentTrace || len(traced[0].Links()) != 1 ||
		traced[0].Links()[0].SpanContext.TraceID().String() != parentTrace {
		t.Fatalf("the traceparent message must have one span whose parent and link are the producer's context; got %d spans", len(traced))
	}
	if len(retried) != 2 {
		t.Fatalf("the retried message has %d spans, want 2 (source, then tier 1)", len(retried))
	}
	first, second := retried[0], retried[1]
	if first.Status().Code != codes.Error || second.Status().Code == codes.Error {
		t.Errorf("statuses %v then %v: want the failed delivery Error and the retry not", first.Status(), second.Status())
	}
	if first.SpanContext().TraceID() != second.SpanContext().TraceID() || second.Parent().SpanID() != first.SpanContext().SpanID() {
		t.Errorf("the retry tier's delivery must continue the first delivery's trace as its child")
	}
	for _, a := range first.Attributes() {
		if a.Key == "error.type" && a.Value.AsString() != "error" {
			t.Errorf("error.type = %q, want error", a.Value.AsString())
		}
	}
}

// /readyz turns 503 when the broker goes away and 200 again when it comes
// back; /healthz stays 200; /metrics scrapes cleanly with the official text
// parser.
func TestReadinessFollowsTheBroker(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	requireFake(t, b)
	reg := prometheus.NewRegistry()
	w, err := worker.New(b.config(), handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }),
		worker.WithLogger(testLogger(t)), worker.WithRegisterer(reg), worker.WithHTTPServer(false))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.HTTPHandler())
	t.Cleanup(srv.Close)
	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status("/readyz"); s != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before Run = %d, want 503", s)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.WaitFor(t, 30*time.Second, "/readyz 200", func() bool { return status("/readyz") == http.StatusOK })

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	if _, ok := families[worker.MetricBuildInfo]; !ok {
		t.Fatalf("/metrics lacks %s", worker.MetricBuildInfo)
	}

	addr := b.cluster.Addrs()[0]
	b.cluster.Close()
	testutil.WaitFor(t, 30*time.Second, "/readyz 503 with the broker gone", func() bool { return status("/readyz") == http.StatusServiceUnavailable })
	if s := status("/healthz"); s != http.StatusOK {
		t.Fatalf("/healthz = %d while the broker is down; a broker outage is not a dead process", s)
	}

	var port int
	fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port)
	back, err := kafkatest.NewCluster(kafkatest.WithKfakeOptions(kfake.Ports(port)))
	if err != nil {
		t.Fatalf("restart the broker on %s: %v", addr, err)
	}
	t.Cleanup(back.Close)
	if err := back.CreateTopic(ctx(t), b.topic, 1); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "/readyz 200 with the broker back", func() bool { return status("/readyz") == http.StatusOK })
}

// WithMiddleware wraps the handler: a middleware sees every delivery, in
// the order given.
func TestWithMiddlewareWrapsTheHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produceKeyed(t, 10, 2)
	var mu sync.Mutex
	calls := map[string][]string{} // per message (its value): the middleware in the order they ran
	tag := func(name string) middleware.Middleware {
		return func(next handler.Handler) handler.Handler {
			return handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
				mu.Lock()
				calls[string(m.Value)] = append(calls[string(m.Value)], name)
				mu.Unlock()
				return next.Handle(ctx, m)
			})
		}
	}
	rec := newRecorder()
	w := start(t, b.config(), rec, worker.WithMiddleware(tag("outer"), tag("inner")))
	testutil.WaitFor(t, 30*time.Second, "all handled", func() bool { return rec.handled.Load() == 10 })
	w.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 10 {
		t.Fatalf("middleware saw %d messages, want 10", len(calls))
	}
	for v, c := range calls {
		if fmt.Sprint(c) != "[outer inner]" {
			t.Fatalf("message %s: middleware calls %v, want [outer inner]", v, c)
		}
	}
}

func counterVal(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	return metricValue(t, reg, name, labels, func(f *metricFamily) float64 { return f.value })
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	return counterVal(t, reg, name, labels...)
}

func histCount(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	return metricValue(t, reg, name, labels, func(f *metricFamily) float64 { return float64(f.count) })
}

func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	n, err := promtest.GatherAndCount(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// metricFamily is one series' value, as the helpers above read it.
type metricFamily struct {
	value float64
	count uint64
}

// metricValue gathers reg and returns pick of the series of name whose label
// values include every one given ("*" matches anything); 0 when none does.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels []string, pick func(*metricFamily) float64) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			values := map[string]bool{}
			for _, lp := range m.GetLabel() {
				values[lp.GetValue()] = true
			}
			match := true
			for _, l := range labels {
				match = match && (l == "*" || values[l])
			}
			if !match {
				continue
			}
			var mf metricFamily
			switch {
			case m.Counter != nil:
				mf.value = m.Counter.GetValue()
			case m.Gauge != nil:
				mf.value = m.Gauge.GetValue()
			case m.Histogram != nil:
				mf.count = m.Histogram.GetSampleCount()
			}
			return pick(&mf)
		}
	}
	return 0
}
