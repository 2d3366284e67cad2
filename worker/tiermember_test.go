package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// The retry tiers are claimed only while they hold work: not at start, at
// once when this worker forwards (and the forwarded message is handled
// from its tier after its due time, its offset committed), through the
// check when a record lands there otherwise, and their member leaves once
// they were idle for tierLinger. The sources are handled throughout by
// the worker's own member, which is never revoked. With static membership
// the tier member is dynamic, and its commits are accepted.
func TestTierMemberOnlyWhileTiersHoldWork(t *testing.T) {
	defer func(l, c time.Duration) { tierLinger, tierCheckEvery = l, c }(tierLinger, tierCheckEvery)
	tierLinger, tierCheckEvery = 2*time.Second, 100*time.Millisecond
	t.Run("dynamic", func(t *testing.T) { testTierMember(t, "") })
	t.Run("static", func(t *testing.T) { testTierMember(t, "pod-0") })
}

func testTierMember(t *testing.T, instanceID string) {

	cluster, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic, group, delay = "orders", "billing", time.Second
	tier := fmt.Sprintf("%s.%s.retry.1", topic, group)
	if err := cluster.CreateTopic(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Brokers, cfg.GroupID, cfg.Topics = cluster.Addrs(), group, []string{topic}
	cfg.RetryTopicDelays, cfg.RetryLocalAttempts = []time.Duration{delay}, 1
	cfg.CommitInterval, cfg.InstanceID = 100*time.Millisecond, instanceID

	type delivery struct {
		topic string
		at    time.Time
	}
	var mu sync.Mutex
	got := map[string][]delivery{}
	deliveries := func(v string) []delivery {
		mu.Lock()
		defer mu.Unlock()
		return append([]delivery(nil), got[v]...)
	}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[string(m.Value)] = append(got[string(m.Value)], delivery{m.Topic, time.Now()})
		if len(got[string(m.Value)]) == 1 && string(m.Value) == "bad" {
			return fmt.Errorf("fails once")
		}
		return nil
	})
	logs := &testutil.Logs{}
	w, err := New(cfg, h, WithLogger(logs.Logger()), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	joins := func() int { return len(logs.Find(slog.LevelInfo, "retry tiers hold work: their group member joins")) }
	leaves := func() int { return len(logs.Find(slog.LevelInfo, "retry tiers idle: their group member leaves")) }
	produce := func(topic, v string) {
		t.Helper()
		if _, err := cluster.Produce(ctx, kafkatest.Record{Topic: topic, Key: []byte(v), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	committedAll := func(topics ...string) bool {
		for _, tp := range topics {
			end, err1 := cluster.EndOffsets(ctx, tp)
			com, err2 := cluster.CommittedOffsets(ctx, group, tp)
			if err1 != nil || err2 != nil {
				return false
			}
			for p, e := range end {
				if e > 0 && com[p] != e {
					return false
				}
			}
		}
		return true
	}

	// Nothing fails: the tiers are never claimed.
	produce(topic, "ok")
	testutil.WaitFor(t, 30*time.Second, "ok handled and committed", func() bool {
		return len(deliveries("ok")) == 1 && committedAll(topic)
	})
	if n := joins(); n != 0 {
		t.Fatalf("the tiers' member joined %d times with nothing forwarded", n)
	}

	// A forward claims them; the message is handled from the tier after
	// its due time, then the member leaves.
	produce(topic, "bad")
	testutil.WaitFor(t, 30*time.Second, "bad handled from the tier", func() bool { return len(deliveries("bad")) == 2 })
	d := deliveries("bad")
	if d[1].topic != tier || d[1].at.Sub(d[0].at) < delay {
		t.Fatalf("second delivery from %s after %v, want from %s after at least %v", d[1].topic, d[1].at.Sub(d[0].at), tier, delay)
	}
	testutil.WaitFor(t, 30*time.Second, "the tiers' member to leave once idle, everything committed", func() bool {
		return leaves() == 1 && committedAll(topic, tier)
	})

	// A record another worker forwarded is found by the check.
	produce(tier, "elsewhere")
	testutil.WaitFor(t, 30*time.Second, "the record in the tier handled, committed, the member gone", func() bool {
		return len(deliveries("elsewhere")) == 1 && leaves() == 2 && committedAll(topic, tier)
	})
	if n := joins(); n != 2 {
		t.Fatalf("the tiers' member joined %d times, want 2", n)
	}
	released := func() []slog.Record { return logs.Find(slog.LevelInfo, "partition released") }
	testutil.WaitFor(t, 30*time.Second, "the tier's two partitions released once per member", func() bool { return len(released()) == 4 })
	for _, r := range released() { // the sources are never revoked
		if got := testutil.Attr(r, "messaging.destination.name"); got != tier {
			t.Fatalf("%s released before the stop, want only the tier %s", got, tier)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
