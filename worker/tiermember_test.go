package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
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
	t.Run("dynamic", func(t *testing.T) { testTierMember(t, "") })
	t.Run("static", func(t *testing.T) { testTierMember(t, "pod-0") })
}

func testTierMember(t *testing.T, instanceID string) {
	const delay = time.Second
	r := newTierRig(t, 2, delay, 2*time.Second)
	cluster, ctx, cfg, topic, group, tier := r.cluster, r.ctx, r.cfg, r.topic, r.group, r.tier
	cfg.InstanceID = instanceID

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

// While one member's tier records wait for their due time, the other
// workers' tier members, whose own claims are idle, stay: leaving would
// only bring them back through the check a moment later, a rebalance each
// way every tierLinger. Once the record is handled and committed, both
// leave, once.
func TestTierMembersStayWhileTheGroupsTiersHoldWork(t *testing.T) {
	r := newTierRig(t, 2, 6*time.Second, time.Second)
	cluster, ctx, cfg, topic, tier := r.cluster, r.ctx, r.cfg, r.topic, r.tier

	var mu sync.Mutex
	var fromTier int
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.Topic == tier {
			fromTier++
			return nil
		}
		return fmt.Errorf("fails: goes to the tier")
	})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var logs [2]*testutil.Logs
	var done [2]chan error
	for i := range logs {
		logs[i], done[i] = &testutil.Logs{}, make(chan error, 1)
		w, err := New(cfg, h, WithLogger(logs[i].Logger()), WithRegisterer(prometheus.NewRegistry()), WithHTTPServer(false))
		if err != nil {
			t.Fatal(err)
		}
		go func() { done[i] <- w.Run(runCtx) }()
	}
	count := func(msg string) (n int) {
		for _, l := range logs {
			n += len(l.Find(slog.LevelInfo, msg))
		}
		return n
	}
	joins := func() int { return count("retry tiers hold work: their group member joins") }
	leaves := func() int { return count("retry tiers idle: their group member leaves") }
	testutil.WaitFor(t, 30*time.Second, "both workers in the group", func() bool {
		return len(logs[0].Find(slog.LevelInfo, "joined consumer group")) > 0 && len(logs[1].Find(slog.LevelInfo, "joined consumer group")) > 0
	})

	if _, err := cluster.Produce(ctx, kafkatest.Record{Topic: topic, Key: []byte("k"), Value: []byte("bad")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "both workers' tier members to join", func() bool { return joins() >= 2 })
	testutil.WaitFor(t, 30*time.Second, "the record handled from the tier", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return fromTier > 0
	})
	// The record waited ~6s, six times tierLinger: an idle member that
	// left meanwhile would have come back through the check.
	if j, l := joins(), leaves(); j != 2 || l != 0 {
		t.Fatalf("while the tier record waited: %d joins and %d leaves of the tier members, want 2 and 0", j, l)
	}
	testutil.WaitFor(t, 30*time.Second, "both tier members to leave once nothing waits", func() bool { return leaves() == 2 })
	if j := joins(); j != 2 {
		t.Fatalf("%d joins of the tier members, want 2", j)
	}
	stop()
	for i := range done {
		if err := <-done[i]; err != nil {
			t.Fatal(err)
		}
	}
}

// recordingStrategy is sarama's cooperative-sticky strategy, recording the
// topics of every assignment it is told of (OnAssignment), so a test can see
// which group members use this one instance.
type recordingStrategy struct {
	inner sarama.BalanceStrategy
	mu    sync.Mutex
	seen  map[string]bool // topic sets (sorted, joined) of the assignments seen
}

func (s *recordingStrategy) Name() string { return s.inner.Name() }
func (s *recordingStrategy) Plan(m map[string]sarama.ConsumerGroupMemberMetadata, t map[string][]int32) (sarama.BalanceStrategyPlan, error) {
	return s.inner.Plan(m, t)
}
func (s *recordingStrategy) AssignmentData(id string, t map[string][]int32, g int32) ([]byte, error) {
	return s.inner.AssignmentData(id, t, g)
}
func (s *recordingStrategy) SupportedProtocols() []sarama.RebalanceProtocol {
	return s.inner.(sarama.RebalanceProtocolBalanceStrategy).SupportedProtocols()
}
func (s *recordingStrategy) SubscriptionUserData(topics []string) ([]byte, error) {
	return s.inner.(sarama.SubscriptionUserDataBalanceStrategy).SubscriptionUserData(topics)
}
func (s *recordingStrategy) OnAssignment(a *sarama.ConsumerGroupMemberAssignment, gen int32) {
	var ts []string
	for t := range a.Topics {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	s.mu.Lock()
	s.seen[fmt.Sprint(ts)] = true
	s.mu.Unlock()
	s.inner.(sarama.OnAssignmentBalanceStrategy).OnAssignment(a, gen)
}

func (s *recordingStrategy) assignments() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sarama's cooperative-sticky strategy is "stateful and must not be shared
// between consumer groups": it keeps the member's generation, which a
// leader uses to settle two members claiming one partition. The tiers'
// member copies the worker's sarama.Config, and so would use the worker's
// instance; it gets one of its own. The worker's instance (installed
// through WithSaramaConfig, where the worker's config would have it) is
// told of the source's assignment only, never the tier's.
func TestTierMemberHasABalanceStrategyOfItsOwn(t *testing.T) {
	r := newTierRig(t, 1, time.Second, time.Minute)
	cluster, ctx, cfg, topic, tier := r.cluster, r.ctx, r.cfg, r.topic, r.tier

	strategy := &recordingStrategy{inner: sarama.NewBalanceStrategyCooperativeSticky(), seen: map[string]bool{}}
	var mu sync.Mutex
	handledFromTier := false
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.Topic == tier {
			handledFromTier = true
			return nil
		}
		return errors.New("fails: goes to the tier")
	})
	logs := &testutil.Logs{}
	w, err := New(cfg, h, WithLogger(logs.Logger()), WithRegisterer(prometheus.NewRegistry()), WithHTTPServer(false),
		WithSaramaConfig(func(c *sarama.Config) {
			c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{strategy}
		}))
	if err != nil {
		t.Fatal(err)
	}
	if !w.lazyTiers() {
		t.Fatal("the tiers are not lazy with the recording cooperative-sticky strategy")
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	if _, err := cluster.Produce(ctx, kafkatest.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "the message handled from the tier", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handledFromTier
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := strategy.assignments()
	sawSource, sawTier := false, false
	for _, a := range got {
		sawSource = sawSource || a == fmt.Sprint([]string{topic})
		sawTier = sawTier || a == fmt.Sprint([]string{tier})
	}
	if !sawSource {
		t.Fatalf("the worker's strategy saw assignments %v, want the source's: is it still the worker's?", got)
	}
	if sawTier {
		t.Fatalf("the worker's cooperative-sticky strategy was told of both members' assignments %v: "+
			"the tier member shares a stateful strategy, which sarama says must not be shared between consumer groups", got)
	}
}

// tierRig is what the tier member tests share: an embedded cluster with
// the source topic "orders", and a worker configuration for group
// "billing" with one retry tier of the given delay, one delivery per hop,
// and commits every 100ms. tierLinger is set to linger and tierCheckEvery
// to 100ms for the test, and restored after it.
type tierRig struct {
	cluster            *kafkatest.Cluster
	ctx                context.Context
	cfg                Config
	topic, group, tier string
}

func newTierRig(t *testing.T, partitions int32, delay, linger time.Duration) *tierRig {
	t.Helper()
	l, c := tierLinger, tierCheckEvery
	t.Cleanup(func() { tierLinger, tierCheckEvery = l, c })
	tierLinger, tierCheckEvery = linger, 100*time.Millisecond
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	r := &tierRig{cluster: cluster, ctx: ctx, topic: "orders", group: "billing"}
	r.tier = fmt.Sprintf("%s.%s.retry.1", r.topic, r.group)
	if err := cluster.CreateTopic(ctx, r.topic, partitions); err != nil {
		t.Fatal(err)
	}
	r.cfg = DefaultConfig()
	r.cfg.Brokers, r.cfg.GroupID, r.cfg.Topics = cluster.Addrs(), r.group, []string{r.topic}
	r.cfg.RetryTopicDelays, r.cfg.RetryLocalAttempts = []time.Duration{delay}, 1
	r.cfg.CommitInterval = 100 * time.Millisecond
	return r
}
