package integration

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
)

// tierRecord is a record as a worker would have put it on retry tier 1 of
// b's topic, with the given kw-attempt and kw-not-before values.
func (b *testBundle) tierRecord(value, attempt, notBefore string) kafkatest.Record {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	return kafkatest.Record{Topic: b.tierTopic(1), Explicit: true, Partition: 0, Value: []byte(value),
		Headers: map[string]string{
			retry.HeaderOriginalTopic: b.topic, retry.HeaderOriginalPartition: "0",
			retry.HeaderOriginalOffset: "0", retry.HeaderOriginalTimestamp: now, retry.HeaderGroup: b.group,
			retry.HeaderAttempt: attempt, retry.HeaderNotBefore: notBefore,
			retry.HeaderError: "upstream 503", retry.HeaderErrorType: "integration.flakyError", retry.HeaderFailedAt: now,
		}}
}

// produceToTier1 creates retry tier 1 of b's topic (one partition, as the
// topic has) and writes recs to it in order, each acknowledged before the
// next is sent.
func (b *testBundle) produceToTier1(t *testing.T, recs ...kafkatest.Record) []kafkatest.ProducedRecord {
	t.Helper()
	if err := b.cluster.CreateTopic(ctx(t), b.tierTopic(1), 1); err != nil {
		t.Fatal(err)
	}
	var out []kafkatest.ProducedRecord
	for _, r := range recs {
		p, err := b.cluster.Produce(ctx(t), r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p...)
	}
	return out
}

// A retry-tier record whose kw-not-before lies in the year 3000 (and whose
// kw-attempt is MaxInt64) waits no longer than its tier's delay. Before,
// it was armed for centuries and stayed its partition's oldest unfinished
// record: with WORKER_MAX_IN_FLIGHT=40 only 39 of the 100 records behind
// it were handled, nothing past it was ever committed, and after a restart
// none was. Now all 101 are handled, the far one after about the tier's
// delay, every offset is committed and nothing is dead-lettered.
func TestFarFutureDueTimeWaitsOnlyTheTierDelay(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const ordinary, tierDelay = 100, time.Second
	year3000 := strconv.FormatInt(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), 10)
	recs := []kafkatest.Record{b.tierRecord("far", strconv.FormatInt(math.MaxInt64, 10), year3000)}
	for i := range ordinary {
		recs = append(recs, b.tierRecord(fmt.Sprintf("r/%d", i), "1", strconv.FormatInt(time.Now().UnixMilli(), 10)))
	}
	produced := b.produceToTier1(t, recs...)
	if produced[0].Offset >= produced[1].Offset {
		t.Fatalf("the far-future record landed at offset %d, not before the others (%d)", produced[0].Offset, produced[1].Offset)
	}

	var got deliveries
	var mu sync.Mutex
	distinct := map[string]bool{}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		got.add(ctx, m)
		mu.Lock()
		distinct[string(m.Value)] = true
		mu.Unlock()
		return nil
	})
	handled := func() int { mu.Lock(); defer mu.Unlock(); return len(distinct) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%d of %d records handled; far-future record delivered %d time(s)", handled(), ordinary+1, len(got.of("far")))
		}
	})

	cfg := b.retryConfig(1, tierDelay)
	cfg.MaxInFlight = 40
	began := time.Now()
	w := start(t, cfg, h)
	testutil.WaitFor(t, 15*time.Second, "all 101 tier records handled", func() bool { return handled() == ordinary+1 })
	b.waitAllCommitted(t, b.tierTopic(1))
	w.stop(t)

	far := got.of("far")
	if len(far) != 1 || far[0].attempt != 1 {
		t.Fatalf("far-future record delivered %d time(s), first as attempt %d; want once, as attempt 1 (its kw-attempt is out of range: 0 before)",
			len(far), far[0].attempt)
	}
	first := time.Time{}
	for i := range ordinary {
		ds := got.of(fmt.Sprintf("r/%d", i))
		if len(ds) != 1 || ds[0].attempt != 2 {
			t.Fatalf("record r/%d delivered %d time(s), first as attempt %d; want once, as attempt 2", i, len(ds), ds[0].attempt)
		}
		if first.IsZero() || ds[0].at.Before(first) {
			first = ds[0].at
		}
	}
	// Read no earlier than the worker started, the far record was due at
	// the earliest a tier delay later; read before the records behind it
	// ran, it was due at the latest a tier delay after the first of them.
	if at := far[0].at; at.Before(began.Add(tierDelay)) {
		t.Errorf("far-future record handled %v after the worker started, before its capped due time (the tier's delay, %v)", at.Sub(began), tierDelay)
	}
	if at, limit := far[0].at, first.Add(tierDelay+2*time.Second); at.After(limit) {
		t.Errorf("far-future record handled %v after the first record behind it, want about the tier's delay (%v)", at.Sub(first), tierDelay)
	}
	dlq, err := b.cluster.ReadAll(ctx(t), b.dlqTopic())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range dlq {
		if n, err := strconv.ParseInt(r.Headers[retry.HeaderAttempt], 10, 64); err != nil || n < 0 {
			t.Errorf("dead-letter record %q has kw-attempt %q", r.Value, r.Headers[retry.HeaderAttempt])
		}
	}
	if len(dlq) != 0 {
		t.Fatalf("%d record(s) dead-lettered, want none: the handler always succeeds", len(dlq))
	}
}

// A kw-attempt out of range on a retry tier counts as no delivery before
// this hop: the handler sees attempt 1 and the dead-letter record says
// kw-attempt=1, not a count wrapped past MaxInt64
// (-9223372036854775808) or one below zero. A count in range is kept.
func TestOutOfRangeAttemptDoesNotWrap(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	nowMs := strconv.FormatInt(time.Now().UnixMilli(), 10)
	cases := []struct {
		value, attempt string
		want           int // deliveries the handler and the dead-letter record report
	}{
		{"maxint", strconv.FormatInt(math.MaxInt64, 10), 1},
		{"negative", "-5", 1},
		{"huge", "123456789012", 1},
		{"in-range", strconv.Itoa(retry.MaxAttempt - 1), retry.MaxAttempt},
	}
	var recs []kafkatest.Record
	for _, c := range cases {
		recs = append(recs, b.tierRecord(c.value, c.attempt, nowMs))
	}
	b.produceToTier1(t, recs...)

	var got deliveries
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		got.add(ctx, m)
		return flakyError{"still down"}
	})
	// One tier and one delivery per hop: a failure on tier 1 goes to the
	// dead-letter topic at once.
	w := start(t, b.retryConfig(1, time.Second), h)
	dead := b.waitRecords(t, b.dlqTopic(), len(cases))
	b.waitAllCommitted(t, b.tierTopic(1))
	w.stop(t)

	byValue := map[string]kafkatest.ReadRecord{}
	for _, r := range dead {
		byValue[string(r.Value)] = r
	}
	for _, c := range cases {
		var attempts []int
		for _, d := range got.of(c.value) {
			attempts = append(attempts, d.attempt)
		}
		if len(attempts) != 1 || attempts[0] != c.want {
			t.Errorf("%s (kw-attempt %s): delivered as attempt(s) %v, want once as attempt %d", c.value, c.attempt, attempts, c.want)
		}
		r, ok := byValue[c.value]
		if !ok {
			t.Errorf("%s not dead-lettered", c.value)
			continue
		}
		if a := r.Headers[retry.HeaderAttempt]; a != strconv.Itoa(c.want) {
			t.Errorf("%s (kw-attempt %s): dead-letter kw-attempt=%s, want %d", c.value, c.attempt, a, c.want)
		}
		if r.Headers[retry.HeaderOriginalTopic] != b.topic {
			t.Errorf("%s: dead-letter kw-original-topic=%q, want %q", c.value, r.Headers[retry.HeaderOriginalTopic], b.topic)
		}
	}
}
