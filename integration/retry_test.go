package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// retryConfig turns on retry tiers with short delays and the dead-letter
// topic.
func (b *testBundle) retryConfig(local int, delays ...time.Duration) worker.Config {
	c := b.config()
	c.RetryLocalAttempts = local
	c.RetryTopicDelays = delays
	c.DLQEnabled = true
	c.RetryCreateTopics = true
	return c
}

func (b *testBundle) tierTopic(n int) string {
	return fmt.Sprintf("%s.%s.retry.%d", b.topic, b.group, n)
}
func (b *testBundle) dlqTopic() string { return fmt.Sprintf("%s.%s.dlq", b.topic, b.group) }

// delivery is one call of a handler, as the tests record it.
type delivery struct {
	topic   string
	attempt int
	at      time.Time
	headers map[string]string
}

// deliveries records every call of a handler, by message value.
type deliveries struct {
	mu sync.Mutex
	m  map[string][]delivery
}

func (d *deliveries) add(ctx context.Context, m *handler.Message) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string][]delivery{}
	}
	hs := map[string]string{}
	for _, h := range m.Headers {
		hs[h.Key] = string(h.Value)
	}
	v := string(m.Value)
	d.m[v] = append(d.m[v], delivery{topic: m.Topic, attempt: retry.Attempt(ctx), at: time.Now(), headers: hs})
	return len(d.m[v])
}

func (d *deliveries) of(v string) []delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]delivery(nil), d.m[v]...)
}

type flakyError struct{ msg string }

func (e flakyError) Error() string { return e.msg }

// waitRecords waits until topic holds n records and returns them.
func (b *testBundle) waitRecords(t *testing.T, topic string, n int) []kafkatest.ReadRecord {
	t.Helper()
	var recs []kafkatest.ReadRecord
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%d record(s) in %s", n, topic), func() bool {
		var err error
		recs, err = b.cluster.ReadAll(ctx(t), topic)
		return err == nil && len(recs) >= n
	})
	if len(recs) != n {
		t.Fatalf("%s holds %d records, want %d", topic, len(recs), n)
	}
	return recs
}

// waitAllCommitted waits until the group is committed at the end of every
// given topic.
func (b *testBundle) waitAllCommitted(t *testing.T, topics ...string) {
	t.Helper()
	for _, topic := range topics {
		tb := *b
		tb.topic = topic
		tb.waitCommitted(t, 30*time.Second)
	}
}

func ms(v string) time.Time {
	n, _ := strconv.ParseInt(v, 10, 64)
	return time.UnixMilli(n)
}

// A message that always fails is delivered RETRY_LOCAL_ATTEMPTS times on
// the source topic and on each tier, then lands on the dead-letter topic
// with every header right, and every offset is committed.
func TestAlwaysFailingMessageIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	began := time.Now()
	src, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("k1"), Value: []byte("doomed"),
		Headers: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "app": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	var got deliveries
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		got.add(ctx, m)
		return fmt.Errorf("charging card: %w", flakyError{"card declined"})
	})
	const local = 2
	w := start(t, b.retryConfig(local, 200*time.Millisecond, 400*time.Millisecond), h)

	dlq := b.waitRecords(t, b.dlqTopic(), 1)[0]
	ds := got.of("doomed")
	if len(ds) != local*3 {
		t.Fatalf("delivered %d times, want RETRY_LOCAL_ATTEMPTS × (1 + tiers) = %d", len(ds), local*3)
	}
	wantTopics := []string{b.topic, b.topic, b.tierTopic(1), b.tierTopic(1), b.tierTopic(2), b.tierTopic(2)}
	for i, d := range ds {
		if d.topic != wantTopics[i] || d.attempt != i+1 {
			t.Errorf("delivery %d: topic %s attempt %d, want %s attempt %d", i+1, d.topic, d.attempt, wantTopics[i], i+1)
		}
	}
	h0 := dlq.Headers
	want := map[string]string{
		retry.HeaderOriginalTopic: b.topic, retry.HeaderOriginalPartition: strconv.Itoa(int(src[0].Partition)),
		retry.HeaderOriginalOffset: strconv.FormatInt(src[0].Offset, 10), retry.HeaderGroup: b.group,
		retry.HeaderAttempt: "6", retry.HeaderError: "charging card: card declined",
		retry.HeaderErrorType: "integration.flakyError", "app": "x",
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	for k, v := range want {
		if h0[k] != v {
			t.Errorf("dead-letter header %s = %q, want %q", k, h0[k], v)
		}
	}
	if _, ok := h0[retry.HeaderNotBefore]; ok {
		t.Error("a dead-lettered message carries no kw-not-before")
	}
	if f := ms(h0[retry.HeaderFailedAt]); f.Before(began.Add(-time.Second)) || f.After(time.Now()) {
		t.Errorf("kw-failed-at %v outside the test's run", f)
	}
	if ts := ms(h0[retry.HeaderOriginalTimestamp]); ts.Before(began.Add(-time.Second)) || ts.After(time.Now()) {
		t.Errorf("kw-original-timestamp %v is not the source record's timestamp", ts)
	}
	if string(dlq.Key) != "k1" || string(dlq.Value) != "doomed" {
		t.Errorf("dead-letter record key %q value %q, want the original", dlq.Key, dlq.Value)
	}
	// Each tier holds the message once, due after its delay.
	for n, delay := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond} {
		r := b.waitRecords(t, b.tierTopic(n+1), 1)[0]
		if r.Headers[retry.HeaderAttempt] != strconv.Itoa(local*(n+1)) || r.Headers[retry.HeaderOriginalTopic] != b.topic {
			t.Errorf("tier %d record headers %v", n+1, r.Headers)
		}
		due := ms(r.Headers[retry.HeaderNotBefore])
		if d := due.Sub(ms(r.Headers[retry.HeaderFailedAt])); d != delay {
			t.Errorf("tier %d due %v after the failure, want %v", n+1, d, delay)
		}
		if first := ds[local*(n+1)]; first.at.Before(due) {
			t.Errorf("tier %d delivered at %v, before its due time %v", n+1, first.at, due)
		}
	}
	b.waitAllCommitted(t, b.topic, b.tierTopic(1), b.tierTopic(2))
	w.stop(t)
}

// A message that fails twice and then succeeds goes through the tiers, is
// handled successfully exactly once, and never before its due time.
func TestRecoveringMessageGoesThroughTiers(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("k"), Value: []byte("flaky")}); err != nil {
		t.Fatal(err)
	}
	var got deliveries
	var successes int
	var mu sync.Mutex
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if got.add(ctx, m) <= 2 {
			return flakyError{"upstream 503"}
		}
		mu.Lock()
		successes++
		mu.Unlock()
		return nil
	})
	w := start(t, b.retryConfig(1, 300*time.Millisecond, 300*time.Millisecond, time.Minute), h)
	testutil.WaitFor(t, 30*time.Second, "success", func() bool { mu.Lock(); defer mu.Unlock(); return successes == 1 })
	b.waitAllCommitted(t, b.topic, b.tierTopic(1), b.tierTopic(2))
	w.stop(t)

	ds := got.of("flaky")
	if len(ds) != 3 || ds[0].topic != b.topic || ds[1].topic != b.tierTopic(1) || ds[2].topic != b.tierTopic(2) {
		t.Fatalf("deliveries %+v, want source, tier 1, tier 2", ds)
	}
	for i := 1; i < 3; i++ {
		if due := ms(ds[i].headers[retry.HeaderNotBefore]); ds[i].at.Before(due) {
			t.Errorf("delivery %d at %v, before its due time %v", i+1, ds[i].at, due)
		}
	}
	if recs, _ := b.cluster.ReadAll(ctx(t), b.dlqTopic()); len(recs) != 0 || successes != 1 {
		t.Fatalf("%d dead letters and %d successes, want 0 and 1", len(recs), successes)
	}
}

// retry.Permanent goes straight to the dead-letter topic after one delivery.
func TestPermanentErrorIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Value: []byte("poison")}); err != nil {
		t.Fatal(err)
	}
	var got deliveries
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		got.add(ctx, m)
		return retry.Permanent(fmt.Errorf("cannot parse %q", m.Value))
	})
	w := start(t, b.retryConfig(3, time.Second), h)
	r := b.waitRecords(t, b.dlqTopic(), 1)[0]
	b.waitAllCommitted(t, b.topic)
	w.stop(t)
	if n := len(got.of("poison")); n != 1 {
		t.Fatalf("delivered %d times, want 1", n)
	}
	if r.Headers[retry.HeaderAttempt] != "1" || !strings.Contains(r.Headers[retry.HeaderError], "cannot parse") {
		t.Fatalf("dead-letter headers %v", r.Headers)
	}
	if recs, _ := b.cluster.ReadAll(ctx(t), b.tierTopic(1)); len(recs) != 0 {
		t.Fatal("a permanent failure must skip the retry tiers")
	}
}

// With RETRY_CREATE_TOPICS=false and the topics missing, Run fails at once
// and names every missing topic and how to create it.
func TestMissingRetryTopicsFailStartup(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	cfg := b.retryConfig(1, time.Second, time.Minute)
	cfg.RetryCreateTopics = false
	w, err := worker.New(cfg, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }),
		worker.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(ctx(t))
	if err == nil {
		t.Fatal("Run started without its retry and dead-letter topics")
	}
	for _, want := range []string{b.tierTopic(1), b.tierTopic(2), b.dlqTopic(), "--partitions 3", "RETRY_CREATE_TOPICS=true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start-up error does not mention %q:\n%v", want, err)
		}
	}
}

// rejectProduceTo makes the embedded broker refuse every produce request to
// topic, with a retriable error, while fail is true; it counts refusals.
func rejectProduceTo(b *testBundle, topic string, fail *atomic.Bool, refused *atomic.Int64) {
	fake := b.cluster.Fake()
	fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if !fail.Load() || !slices.ContainsFunc(pr.Topics, func(t kmsg.ProduceRequestTopic) bool { return t.Topic == topic }) {
			return nil, nil, false
		}
		refused.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range pr.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = kerr.NotEnoughReplicas.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

// While publishing to the retry topic fails, the failed message's offset is
// not committed and other keys keep flowing; once the broker accepts again
// the message arrives where it should, once, and nothing is lost.
func TestForwardFailureKeepsTheMessage(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	requireFake(t, b)
	bad, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("kb"), Value: []byte("bad")})
	if err != nil {
		t.Fatal(err)
	}
	const others = 50
	b.produceKeyed(t, others, 10)

	var fail atomic.Bool
	var refused atomic.Int64
	fail.Store(true)
	rejectProduceTo(b, b.tierTopic(1), &fail, &refused)

	rec := newRecorder()
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Value) == "bad" {
			return flakyError{"always"}
		}
		return rec.Handle(ctx, m)
	})
	cfg := b.retryConfig(1, 200*time.Millisecond)
	cfg.RetryBackoffInitial, cfg.RetryBackoffMax = 50*time.Millisecond, 200*time.Millisecond
	w := start(t, cfg, h)

	testutil.WaitFor(t, 30*time.Second, "other keys handled while the publish fails", func() bool { return rec.handled.Load() == others })
	testutil.WaitFor(t, 30*time.Second, "several refused publishes", func() bool { return refused.Load() >= 3 })
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := com[0]; ok && o > bad[0].Offset {
		t.Fatalf("committed offset %d past the message whose publish keeps failing (offset %d)", o, bad[0].Offset)
	}

	fail.Store(false)
	tier := b.waitRecords(t, b.tierTopic(1), 1)[0]
	if tier.Headers[retry.HeaderOriginalOffset] != strconv.FormatInt(bad[0].Offset, 10) || string(tier.Value) != "bad" {
		t.Fatalf("retry record %+v is not the failed message", tier)
	}
	b.waitRecords(t, b.dlqTopic(), 1) // it keeps failing on tier 1, so it ends dead-lettered
	b.waitAllCommitted(t, b.topic, b.tierTopic(1))
	w.stop(t)
	if distinct, dupes := rec.check(t); distinct != others || dupes != 0 {
		t.Fatalf("handled %d others with %d duplicates, want %d and 0", distinct, dupes, others)
	}
	if recs, _ := b.cluster.ReadAll(ctx(t), b.tierTopic(1)); len(recs) != 1 {
		t.Fatalf("retry topic holds %d records after the outage, want exactly 1", len(recs))
	}
}

// A retry partition whose message waits for its due time is revoked when a
// second worker joins (eager strategy: every partition is revoked) and
// assigned again: the message is still delivered, once, and not before its
// due time.
func TestWaitingRetrySurvivesRebalance(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("k"), Value: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	var got deliveries
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if got.add(ctx, m) == 1 {
			return flakyError{"not yet"}
		}
		return nil
	})
	cfg := b.retryConfig(1, 3*time.Second)
	cfg.RebalanceStrategy = worker.StrategyRange
	w1 := start(t, cfg, h)
	b.waitRecords(t, b.tierTopic(1), 1) // now waiting on tier 1 for 3s
	w2 := start(t, cfg, h)
	// Eager: the group stable with both members means w1 gave every
	// partition back, the waiting tier partition included.
	testutil.WaitFor(t, 30*time.Second, "the group rebalanced onto both workers", func() bool {
		state, members, err := b.cluster.GroupState(ctx(t), b.group)
		return err == nil && state == "Stable" && members == 2
	})
	if n := len(got.of("later")); n != 1 {
		t.Fatalf("delivered %d times before the rebalance, want 1 (the retry is not due yet)", n)
	}
	w2.stop(t)
	testutil.WaitFor(t, 30*time.Second, "the retried message delivered", func() bool { return len(got.of("later")) >= 2 })
	b.waitAllCommitted(t, b.topic, b.tierTopic(1))
	w1.stop(t)
	ds := got.of("later")
	if len(ds) != 2 {
		t.Fatalf("delivered %d times, want 2 (the failure and the retry)", len(ds))
	}
	if due := ms(ds[1].headers[retry.HeaderNotBefore]); ds[1].at.Before(due) {
		t.Fatalf("retry delivered at %v, before its due time %v", ds[1].at, due)
	}
}

// Shutting down while a message backs off in place commits nothing for it;
// the next worker handles it.
func TestShutdownWhileBackingOffCommitsNothingForIt(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	first, err := b.cluster.Produce(ctx(t),
		kafkatest.Record{Topic: b.topic, Key: []byte("a"), Value: []byte("stubborn")},
		kafkatest.Record{Topic: b.topic, Key: []byte("b"), Value: []byte("fine")})
	if err != nil {
		t.Fatal(err)
	}
	var got deliveries
	var healed atomic.Bool
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		got.add(ctx, m)
		if string(m.Value) == "stubborn" && !healed.Load() {
			return flakyError{"down"}
		}
		return nil
	})
	cfg := b.retryConfig(100, time.Minute)
	cfg.RetryBackoffInitial, cfg.RetryBackoffMax = time.Second, time.Second
	w := start(t, cfg, h)
	testutil.WaitFor(t, 30*time.Second, "the failing message tried and the other handled", func() bool {
		return len(got.of("stubborn")) >= 1 && len(got.of("fine")) == 1
	})
	w.stop(t)
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := com[0]; ok && o > first[0].Offset {
		t.Fatalf("committed %d past the message that was backing off (offset %d)", o, first[0].Offset)
	}

	healed.Store(true)
	before := len(got.of("stubborn"))
	w2 := start(t, cfg, h)
	testutil.WaitFor(t, 30*time.Second, "the message handled after the restart", func() bool { return len(got.of("stubborn")) > before })
	b.waitCommitted(t, 30*time.Second)
	w2.stop(t)
	if n := len(got.of("fine")); n != 1 {
		t.Fatalf("the message that succeeded before the stop was handled %d times, want 1", n)
	}
}

// While one key backs off in place, the other keys of its partition keep
// flowing with low latency.
func TestBackoffBlocksOnlyItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("slow"), Value: []byte("slow/0")}); err != nil {
		t.Fatal(err)
	}
	var healed atomic.Bool
	var mu sync.Mutex
	var latencies []time.Duration
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Key) == "slow" {
			if !healed.Load() {
				return flakyError{"busy"}
			}
			return nil
		}
		mu.Lock()
		latencies = append(latencies, time.Since(m.Timestamp))
		mu.Unlock()
		return nil
	})
	cfg := b.retryConfig(1000, time.Minute)
	cfg.RetryBackoffInitial, cfg.RetryBackoffMax = 2*time.Second, 2*time.Second
	w := start(t, cfg, h)
	// Produce other keys one by one while "slow" keeps failing.
	for i := range 20 {
		if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: fmt.Appendf(nil, "k%d", i), Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 30*time.Second, "other keys handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(latencies) == 20 })
	healed.Store(true)
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	slices.Sort(latencies)
	if slowest := latencies[len(latencies)-1]; slowest > time.Second {
		t.Fatalf("slowest other key took %v from produce to handler while a key backed off 2s at a time; want well under the backoff", slowest)
	}
}
