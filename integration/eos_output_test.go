package integration

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/worker"
)

// With exactly-once, a handler's output record that could never be sent
// (here: to a topic that does not exist) is refused before it goes into
// the transaction: its message's delivery fails and is retried, holding
// its key, as a failed send is without exactly-once, while every other
// message commits. Sent, it would abort each transaction, with every
// partition's work in it, again and again.
func TestExactlyOnceOutputThatCannotBeSentHoldsOnlyItsMessage(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	out := b.outputTopic(t, 2)
	const n, keys = 40, 8
	b.produceKeyed(t, n, keys)
	recs, err := b.cluster.ReadAll(ctx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	poisonPart, poisonOffset := int32(-1), int64(-1)
	for _, r := range recs {
		if string(r.Value) == "k0/0" {
			poisonPart, poisonOffset = r.Partition, r.Offset
		}
	}
	var poisonCalls atomic.Int32
	e := &emitter{out: out, calls: map[string]int{}}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Value) == "k0/0" {
			poisonCalls.Add(1)
			return worker.Produce(ctx, &producer.Message{Topic: "no-such-topic-" + b.group, Value: m.Value})
		}
		return e.Handle(ctx, m)
	})
	logs := &testutil.Logs{}
	cfg := b.config()
	cfg.ExactlyOnce = true
	reg := prometheus.NewRegistry()
	start(t, cfg, h, worker.WithLogger(logs.Logger()), worker.WithRegisterer(reg))
	ends, err := b.cluster.EndOffsets(ctx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	defer func() {
		t.Logf("poison on partition %d; %s; transactions aborted: %d", poisonPart, last,
			len(logs.Find(slog.LevelError, "transaction aborted; the partitions are given up and their messages since the last commit handled again")))
	}()
	testutil.WaitFor(t, 30*time.Second, "the partitions without the bad output record committed to their end", func() bool {
		com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
		if err != nil {
			return false
		}
		last = fmt.Sprintf("committed %v, ends %v", com, ends)
		for p, end := range ends {
			if p != poisonPart && com[p] < end {
				return false
			}
		}
		return true
	})
	refused := func() []slog.Record {
		return logs.Find(slog.LevelError, "the handler's output cannot be sent; its offset stays uncommitted and the delivery is retried (the handler runs again)")
	}
	testutil.WaitFor(t, 30*time.Second, "the bad message's delivery refused and retried", func() bool {
		return poisonCalls.Load() >= 2 && len(refused()) > 0
	})
	if got := fmt.Sprint(testutil.Attr(refused()[0], "error")); !strings.Contains(got, "no-such-topic-"+b.group) {
		t.Fatalf("refusal logged with error %q, want it to name the topic", got)
	}
	if n := len(logs.Find(slog.LevelError, "transaction aborted; the partitions are given up and their messages since the last commit handled again")); n > 0 {
		t.Fatalf("%d transactions aborted, want none: the bad record went into one", n)
	}
	// Each refused delivery counts as a failure, not as the handler's
	// success: every other key's messages succeeded once each; k0's wait
	// behind the bad one.
	g, done := b.group, float64(n-n/keys)
	testutil.WaitFor(t, 30*time.Second, "the deliveries counted, the bad one's refusals among them", func() bool {
		return counterVal(t, reg, worker.MetricMessagesProcessed, g, b.topic, "success") >= done &&
			counterVal(t, reg, worker.MetricMessagesProcessed, g, b.topic, "error") >= 2
	})
	if s, e := counterVal(t, reg, worker.MetricMessagesProcessed, g, b.topic, "success"), counterVal(t, reg, worker.MetricMessagesProcessed, g, b.topic, "error"); s != done || e < 2 {
		t.Fatalf("processed: %v successes and %v errors, want %v successes (none of key k0) and at least 2 errors", s, e, done)
	}
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if com[poisonPart] > poisonOffset {
		t.Fatalf("partition %d committed to %d, past the bad message at %d, whose output was never sent", poisonPart, com[poisonPart], poisonOffset)
	}
}
