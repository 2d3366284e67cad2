package integration

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// A batch has a span of its own (the message count, a link to each traced
// producer) and each message a child span with its own result; the batch
// metrics count calls, sizes and outcomes, and each message is counted as
// a Handler's would be.
func TestBatchTelemetry(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const parentTrace = "0af7651916cd43dd8448eb211c80319c"
	if _, err := b.cluster.Produce(ctx(t),
		kafkatest.Record{Topic: b.topic, Key: []byte("k1"), Value: []byte("traced"),
			Headers: map[string]string{"traceparent": "00-" + parentTrace + "-b7ad6b7169203331-01"}},
		kafkatest.Record{Topic: b.topic, Key: []byte("k2"), Value: []byte("flaky")},
		kafkatest.Record{Topic: b.topic, Key: []byte("k3"), Value: []byte("ok")},
	); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	h := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		time.Sleep(20 * time.Millisecond) // the batch's work, which each message's span covers
		errs := make([]error, len(msgs))
		if calls.Add(1) == 1 {
			for i, m := range msgs {
				if string(m.Value) == "flaky" {
					errs[i] = errors.New("once")
				}
			}
		}
		return handler.BatchResult(errs)
	})
	rec := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.BatchWait = 300 * time.Millisecond // the three records arrive in one fetch: one batch
	w := startBatch(t, cfg, h, worker.WithRegisterer(reg),
		worker.WithTracerProvider(provider), worker.WithPropagator(propagation.TraceContext{}))
	b.waitCommitted(t, 30*time.Second)
	testutil.WaitFor(t, 10*time.Second, "two batches and four deliveries traced", func() bool { return len(rec.Ended()) >= 6 })
	w.stop(t)

	if calls.Load() != 2 {
		t.Fatalf("%d HandleBatch calls, want 2 (the three records, then the flaky one again)", calls.Load())
	}
	var batches, messages []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if count, ok := attrOf(s, "messaging.batch.message_count"); ok {
			if int(count.AsInt64()) != map[int]int{0: 3, 1: 1}[len(batches)] {
				t.Errorf("batch span %d: message count %d", len(batches), count.AsInt64())
			}
			batches = append(batches, s)
		} else {
			messages = append(messages, s)
		}
	}
	if len(batches) != 2 || len(messages) != 4 {
		t.Fatalf("%d batch spans and %d message spans, want 2 and 4", len(batches), len(messages))
	}
	first := batches[0]
	if len(first.Links()) != 1 || first.Links()[0].SpanContext.TraceID().String() != parentTrace {
		t.Errorf("the first batch span has %d links, want one, to the traced record's producer", len(first.Links()))
	}
	failed := 0
	for _, s := range messages {
		if s.Parent().SpanID() != first.SpanContext().SpanID() && s.Parent().SpanID() != batches[1].SpanContext().SpanID() {
			t.Errorf("message span %q is not a child of a batch span", s.Name())
		}
		if d := s.EndTime().Sub(s.StartTime()); d < 20*time.Millisecond {
			t.Errorf("message span %q lasted %v: it must cover the HandleBatch call (20ms)", s.Name(), d)
		}
		if s.Status().Code == codes.Error {
			failed++
			if key, _ := attrOf(s, "messaging.kafka.message.key"); key.AsString() != "k2" {
				t.Errorf("failed span for key %q, want k2", key.AsString())
			}
		}
		if key, _ := attrOf(s, "messaging.kafka.message.key"); key.AsString() == "k1" &&
			(len(s.Links()) != 1 || s.Links()[0].SpanContext.TraceID().String() != parentTrace) {
			t.Errorf("the traced record's span must link to its producer")
		}
	}
	if failed != 1 {
		t.Errorf("%d message spans failed, want 1", failed)
	}

	g, topic := b.group, b.topic
	for _, c := range []struct {
		name        string
		got, expect float64
	}{
		{"batch calls", histCount(t, reg, worker.MetricBatchMessages, g, topic), 2},
		{"batch partial", histCount(t, reg, worker.MetricBatchDuration, g, topic, "partial"), 1},
		{"batch success", histCount(t, reg, worker.MetricBatchDuration, g, topic, "success"), 1},
		{"processed success", counterVal(t, reg, worker.MetricMessagesProcessed, g, topic, "success"), 3},
		{"processed error", counterVal(t, reg, worker.MetricMessagesProcessed, g, topic, "error"), 1},
		{"consumed", counterVal(t, reg, worker.MetricMessagesConsumed, g, topic), 3},
	} {
		if c.got != c.expect {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.expect)
		}
	}
}

func attrOf(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, a := range s.Attributes() {
		if a.Key == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}
