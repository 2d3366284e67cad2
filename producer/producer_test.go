package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

// A sync send lands where Send says, with its key, value and headers, and
// the traceparent of its own PRODUCER span, a child of the caller's.
func TestSendLandsWithHeadersAndTraceContext(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	p := b.producer(t, WithTracerProvider(tp), WithPropagator(propagation.TraceContext{}))

	ctx, parent := tp.Tracer("test").Start(testCtx(t), "request")
	part, off, err := p.Send(ctx, &Message{Topic: b.topic, Key: []byte("k1"), Value: []byte("v1"),
		Headers: []handler.Header{{Key: "source", Value: []byte("test")}}})
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := b.cluster.ReadAll(testCtx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Partition != part || recs[0].Offset != off || string(recs[0].Key) != "k1" ||
		string(recs[0].Value) != "v1" || recs[0].Headers["source"] != "test" {
		t.Fatalf("Send said %d/%d; the topic holds %+v", part, off, recs)
	}
	var send sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "send "+b.topic {
			send = s
		}
	}
	if send == nil || send.SpanKind() != trace.SpanKindProducer || send.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("no PRODUCER span send %s, child of the caller's: %v", b.topic, rec.Ended())
	}
	want := fmt.Sprintf("00-%s-%s-01", send.SpanContext().TraceID(), send.SpanContext().SpanID())
	if got := recs[0].Headers["traceparent"]; got != want {
		t.Errorf("traceparent %q, want the send span's %q", got, want)
	}
	attrs := map[string]string{}
	for _, a := range send.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for k, v := range map[string]string{
		"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.destination.name": b.topic,
		"messaging.destination.partition.id": fmt.Sprint(part), "messaging.kafka.offset": fmt.Sprint(off),
		"messaging.kafka.message.key": "k1", "messaging.client.id": "kafkaworker",
	} {
		if attrs[k] != v {
			t.Errorf("span attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	if got := metric(t, b.reg, metricdef.ProducerSent, map[string]string{"topic": b.topic}); got != 1 {
		t.Errorf("%s = %v, want 1", metricdef.ProducerSent, got)
	}
	if got := metric(t, b.reg, metricdef.ProducerSendDuration, map[string]string{"topic": b.topic, "result": "success"}); got != 1 {
		t.Errorf("%s{result=success} has %v samples, want 1", metricdef.ProducerSendDuration, got)
	}
}

// Every SendAsync gets exactly one callback, and what succeeded is in the
// topic once.
func TestSendAsyncCallbacksFireExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	p := b.producer(t)
	const n = 2000
	var calls [n]atomic.Int32
	var failed, done atomic.Int64
	for i := range n {
		p.SendAsync(testCtx(t), &Message{Topic: b.topic, Key: fmt.Appendf(nil, "k%d", i%17), Value: fmt.Appendf(nil, "%d", i)},
			func(_ int32, _ int64, err error) {
				calls[i].Add(1)
				if err != nil {
					failed.Add(1)
				}
				done.Add(1)
			})
	}
	testutil.WaitFor(t, 30*time.Second, "every callback", func() bool { return done.Load() == n })
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if c := calls[i].Load(); c != 1 {
			t.Fatalf("message %d: %d callbacks", i, c)
		}
	}
	recs, err := b.cluster.ReadAll(testCtx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if failed.Load() != 0 || len(recs) != n {
		t.Fatalf("%d failed, %d in the topic, want 0 and %d", failed.Load(), len(recs), n)
	}
}

// All records of one key land on one partition, in the order sent, and
// it is the partition Kafka's Java client picks (franz-go's murmur2
// partitioner, an implementation independent of sarama's, stands in for
// it).
func TestKeyedRecordsLandOnOnePartitionInOrder(t *testing.T) {
	t.Parallel()
	const partitions = 6
	b := setup(t, partitions)
	p := b.producer(t)
	var wg sync.WaitGroup
	var errs atomic.Int64
	for i := range 600 {
		wg.Add(1)
		p.SendAsync(testCtx(t), &Message{Topic: b.topic, Key: fmt.Appendf(nil, "key-%d", i%20), Value: fmt.Appendf(nil, "%d", i)},
			func(_ int32, _ int64, err error) {
				if err != nil {
					errs.Add(1)
				}
				wg.Done()
			})
	}
	wg.Wait()
	if errs.Load() > 0 {
		t.Fatalf("%d sends failed", errs.Load())
	}
	recs, err := b.cluster.ReadAll(testCtx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	java := kgo.StickyKeyPartitioner(nil).ForTopic(b.topic)
	where, last := map[string]int32{}, map[string]int{}
	for _, r := range recs {
		k := string(r.Key)
		if p, ok := where[k]; ok && p != r.Partition {
			t.Fatalf("key %s on partitions %d and %d", k, p, r.Partition)
		}
		where[k] = r.Partition
		var v int
		fmt.Sscan(string(r.Value), &v)
		if prev, ok := last[k]; ok && v <= prev {
			t.Fatalf("key %s: %d after %d", k, v, prev)
		}
		last[k] = v
		if want := java.Partition(&kgo.Record{Key: r.Key}, partitions); int32(want) != r.Partition {
			t.Fatalf("key %s on partition %d; Kafka's default partitioner puts it on %d", k, r.Partition, want)
		}
	}
	if len(recs) != 600 || len(where) != 20 {
		t.Fatalf("%d records of %d keys", len(recs), len(where))
	}
}

// Message.Partition overrides the key; one out of range is a clear error.
func TestExplicitPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	p := b.producer(t)
	for i := range 5 {
		part, _, err := p.Send(testCtx(t), &Message{Topic: b.topic, Key: fmt.Appendf(nil, "k%d", i), Partition: new(int32(2))})
		if err != nil || part != 2 {
			t.Fatalf("explicit partition 2: landed on %d, %v", part, err)
		}
	}
	_, _, err := p.Send(testCtx(t), &Message{Topic: b.topic, Partition: new(int32(7))})
	var se *SendError
	if !errors.As(err, &se) || !errors.Is(err, sarama.ErrInvalidPartition) || se.Partition != 7 {
		t.Fatalf("partition 7 of 3: %v", err)
	}
}

// A broker that refuses the write gives a clear error at once, counted by
// reason; a topic that does not exist too.
func TestBrokerRefusalIsAClearError(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	p := b.producer(t)
	var on atomic.Bool
	on.Store(true)
	b.produceAnswers(&on, false, kerr.TopicAuthorizationFailed.Code)
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	_, _, err := p.Send(ctx, &Message{Topic: b.topic, Value: []byte("v")})
	var se *SendError
	if !errors.As(err, &se) || !errors.Is(err, sarama.ErrTopicAuthorizationFailed) || !strings.Contains(err.Error(), "lacks Write on topic "+b.topic) {
		t.Fatalf("refused write: %v", err)
	}
	if got := metric(t, b.reg, metricdef.ProducerErrors, map[string]string{"topic": b.topic, "reason": metricdef.ReasonUnauthorized}); got != 1 {
		t.Errorf("errors{reason=unauthorized} = %v, want 1", got)
	}
	on.Store(false)
	if _, _, err := p.Send(ctx, &Message{Topic: b.topic, Value: []byte("v")}); err != nil {
		t.Fatalf("after the fault: %v", err)
	}

	_, _, err = p.Send(ctx, &Message{Topic: "no-such-topic", Value: []byte("v")})
	if !errors.Is(err, sarama.ErrUnknownTopicOrPartition) || !strings.Contains(err.Error(), "does not exist (the producer does not create topics)") {
		t.Fatalf("unknown topic: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the errors took the whole deadline")
	}
}

// Send honours its context: against a broker that never answers it
// returns the context's error when that ends.
func TestSendHonoursContext(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	p := b.producer(t)
	var on atomic.Bool
	on.Store(true)
	b.produceAnswers(&on, true, 0)
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := p.Send(ctx, &Message{Topic: b.topic, Value: []byte("v")})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Send against a silent broker returned %v after %v", err, time.Since(start))
	}
	var called atomic.Int32
	p.SendAsync(ctx, &Message{Topic: b.topic}, func(_ int32, _ int64, err error) {
		if errors.Is(err, context.DeadlineExceeded) {
			called.Add(1)
		}
	})
	if called.Load() != 1 {
		t.Fatal("SendAsync with a done context: want its callback at once with the context's error")
	}
	if got := metric(t, b.reg, metricdef.ProducerErrors, map[string]string{"topic": b.topic, "reason": metricdef.ReasonCanceled}); got != 1 {
		t.Errorf("errors{reason=canceled} = %v, want 1 (the send refused at once)", got)
	}
	closeCtx, cancelClose := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancelClose()
	_ = p.Close(closeCtx)
}

// Close flushes what is buffered: with sends held back to batch them for
// a second, everything sent is delivered by Close, and every callback has
// fired when Close returns.
func TestCloseFlushes(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	p := b.producer(t, WithSaramaConfig(func(s *sarama.Config) {
		s.Producer.Flush.Frequency = time.Second
		s.Producer.Flush.Messages = 1_000_000
	}))
	const n = 300
	var ok atomic.Int64
	for i := range n {
		p.SendAsync(testCtx(t), &Message{Topic: b.topic, Value: fmt.Appendf(nil, "%d", i)}, func(_ int32, _ int64, err error) {
			if err == nil {
				ok.Add(1)
			}
		})
	}
	if ok.Load() == n {
		t.Fatal("everything was sent before Close: the test does not test the flush")
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ok.Load() != n {
		t.Fatalf("%d of %d acknowledged when Close returned", ok.Load(), n)
	}
	recs, err := b.cluster.ReadAll(testCtx(t), b.topic)
	if err != nil || len(recs) != n {
		t.Fatalf("%d records in the topic (%v), want %d", len(recs), err, n)
	}
	_, _, err = p.Send(testCtx(t), &Message{Topic: b.topic})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	var closed atomic.Bool
	p.SendAsync(testCtx(t), &Message{Topic: b.topic}, func(_ int32, _ int64, err error) { closed.Store(errors.Is(err, ErrClosed)) })
	if !closed.Load() {
		t.Fatal("SendAsync after Close: want ErrClosed")
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// With a broker that never answers, Close ends at its deadline: the
// unacknowledged sends fail with ErrCloseDeadline, Close says how many,
// and sarama's goroutines end soon after (the cleanup waits for them).
func TestCloseDeadlineWithSilentBroker(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	p := b.producer(t)
	var on atomic.Bool
	on.Store(true)
	b.produceAnswers(&on, true, 0)
	const n = 10
	var deadline, other atomic.Int64
	for i := range n {
		p.SendAsync(testCtx(t), &Message{Topic: b.topic, Value: fmt.Appendf(nil, "%d", i)}, func(_ int32, _ int64, err error) {
			if errors.Is(err, ErrCloseDeadline) {
				deadline.Add(1)
			} else {
				other.Add(1)
			}
		})
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Close(ctx)
	took := time.Since(start)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Unacknowledged != n || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want a *CloseError with %d unacknowledged", err, n)
	}
	if took > 2*time.Second {
		t.Fatalf("Close took %v with a 500ms deadline", took)
	}
	if deadline.Load() != n || other.Load() != 0 {
		t.Fatalf("callbacks: %d ErrCloseDeadline, %d other; want %d and 0", deadline.Load(), other.Load(), n)
	}
	if got := metric(t, b.reg, metricdef.ProducerErrors, map[string]string{"topic": b.topic, "reason": metricdef.ReasonClosed}); got != n {
		t.Errorf("errors{reason=closed} = %v, want %d", got, n)
	}
}

// New against an address where nothing answers fails within
// KAFKA_CONNECT_TIMEOUT, naming it.
func TestNewUnreachableBroker(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Brokers = []string{"127.0.0.1:1"}
	c.ConnectTimeout = 500 * time.Millisecond
	logs := &testutil.Logs{}
	start := time.Now()
	_, err := New(c, WithLogger(logs.Logger()))
	if err == nil || !strings.Contains(err.Error(), "KAFKA_CONNECT_TIMEOUT") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("New: %v, want an error naming KAFKA_CONNECT_TIMEOUT and the broker", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("New took %v", time.Since(start))
	}
}

// Two producers share a registry: the second takes the first's
// collectors, and their sends add up.
func TestProducersShareARegistry(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	p1, p2 := b.producer(t), b.producer(t)
	for _, p := range []*Producer{p1, p2, p2} {
		if _, _, err := p.Send(testCtx(t), &Message{Topic: b.topic, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := promtest.GatherAndCount(b.reg, metricdef.ProducerSent)
	if err != nil || n != 1 {
		t.Fatalf("%d series of %s (%v), want 1", n, metricdef.ProducerSent, err)
	}
	if got := metric(t, b.reg, metricdef.ProducerSent, map[string]string{"topic": b.topic}); got != 3 {
		t.Fatalf("%s = %v, want 3", metricdef.ProducerSent, got)
	}
}

// A retriable refusal that lasts is retried, then reported with the
// broker's error, in bounded time.
func TestRetriableRefusalEndsInAnError(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	p := b.producer(t, WithSaramaConfig(func(s *sarama.Config) { s.Producer.Retry.Max = 2 }))
	var on atomic.Bool
	on.Store(true)
	b.produceAnswers(&on, false, kerr.NotEnoughReplicas.Code)
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	_, _, err := p.Send(ctx, &Message{Topic: b.topic, Key: []byte("k"), Value: []byte("v")})
	if !errors.Is(err, sarama.ErrNotEnoughReplicas) || ctx.Err() != nil {
		t.Fatalf("a lasting NOT_ENOUGH_REPLICAS: %v (context: %v)", err, ctx.Err())
	}
	if got := metric(t, b.reg, metricdef.ProducerErrors, map[string]string{"topic": b.topic, "reason": metricdef.ReasonOther}); got != 1 {
		t.Errorf("errors{reason=other} = %v, want 1", got)
	}
}

// Sends racing Close: every send completes exactly once, either written
// or refused with ErrClosed, and exactly the written ones are in the topic.
func TestCloseWhileSending(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	p := b.producer(t)
	const senders, each = 8, 200
	var calls [senders * each]atomic.Int32
	var written, refused, other atomic.Int64
	var started sync.WaitGroup
	var wg sync.WaitGroup
	started.Add(senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i == each/4 {
					started.Done()
				}
				n := s*each + i
				p.SendAsync(testCtx(t), &Message{Topic: b.topic, Key: fmt.Appendf(nil, "k%d", n%13), Value: fmt.Appendf(nil, "%d", n)},
					func(_ int32, _ int64, err error) {
						calls[n].Add(1)
						switch {
						case err == nil:
							written.Add(1)
						case errors.Is(err, ErrClosed):
							refused.Add(1)
						default:
							other.Add(1)
						}
					})
			}
		}()
	}
	started.Wait()
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for n := range calls {
		if c := calls[n].Load(); c != 1 {
			t.Fatalf("send %d: %d callbacks", n, c)
		}
	}
	recs, err := b.cluster.ReadAll(testCtx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if other.Load() != 0 || int64(len(recs)) != written.Load() || written.Load()+refused.Load() != senders*each {
		t.Fatalf("written %d, refused %d, other %d; %d in the topic", written.Load(), refused.Load(), other.Load(), len(recs))
	}
}

// A nil message or one without a topic is refused with an error that says
// so, and leaves no metric series with an empty topic.
func TestSendWithoutATopicIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	p := b.producer(t)
	if _, _, err := p.Send(testCtx(t), nil); err == nil || !strings.Contains(err.Error(), "message is nil") {
		t.Fatalf("Send(nil): %v, want it to say the message is nil", err)
	}
	if _, _, err := p.Send(testCtx(t), &Message{Value: []byte("v")}); err == nil || !strings.Contains(err.Error(), "no Topic") {
		t.Fatalf("Send without a topic: %v, want it to say so", err)
	}
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "topic" && lp.GetValue() == "" {
					t.Fatalf("%s has a series with topic=\"\"", mf.GetName())
				}
			}
		}
	}
}
