package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

var nameSeq atomic.Int64

// uniqueName gives each test its own topics and groups, so tests can run in
// parallel on one cluster and re-run against a long-lived real cluster.
func uniqueName(t *testing.T, what string) string {
	r := strings.NewReplacer("/", "-", " ", "-")
	return fmt.Sprintf("%s-%s-%d-%d", r.Replace(t.Name()), what, time.Now().UnixNano()%1e9, nameSeq.Add(1))
}

// testBundle is what a subtest works with: a cluster, a topic and a group
// of its own.
type testBundle struct {
	cluster *kafkatest.Cluster
	topic   string
	group   string
}

// setup starts (or connects to) a cluster and creates a topic with the
// given partitions.
func setup(t *testing.T, partitions int32) *testBundle {
	t.Helper()
	return setupWithConfig(t, partitions, nil)
}

// setupWithConfig is setup with topic configs on the source topic.
func setupWithConfig(t *testing.T, partitions int32, configs map[string]string) *testBundle {
	t.Helper()
	skipShort(t)
	c, err := kafkatest.FromEnv()
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(c.Close)
	b := &testBundle{cluster: c, topic: uniqueName(t, "topic"), group: uniqueName(t, "group")}
	if err := c.CreateTopicWithConfig(ctx(t), b.topic, partitions, configs); err != nil {
		t.Fatal(err)
	}
	return b
}

// skipShort skips an integration test under -short (make short): every
// test here runs a broker and workers, some for tens of seconds.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs a Kafka broker and workers; skipped under -short (run make test for the whole suite)")
	}
}

// requireFake skips a test that needs the embedded broker's fault injection
// when running against a real cluster.
func requireFake(t *testing.T, b *testBundle) {
	t.Helper()
	if b.cluster.Fake() == nil {
		t.Skip("needs the embedded broker's fault injection; KAFKA_BROKERS points at a real cluster")
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// config is a worker configuration tuned for tests: short group timeouts so
// rebalances and member expiry take seconds, not minutes.
func (b *testBundle) config() worker.Config {
	c := worker.DefaultConfig()
	c.Brokers = b.cluster.Addrs()
	c.GroupID = b.group
	c.Topics = []string{b.topic}
	// The embedded broker accepts session timeouts from 1s; a real broker's
	// group.min.session.timeout.ms is 6s by default.
	c.SessionTimeout, c.HeartbeatInterval = 3*time.Second, 500*time.Millisecond
	if b.cluster.Fake() == nil {
		c.SessionTimeout, c.HeartbeatInterval = 6*time.Second, time.Second
	}
	c.RebalanceTimeout = 10 * time.Second
	c.CommitInterval = 100 * time.Millisecond
	c.ShutdownTimeout = 10 * time.Second
	c.RetryBackoffInitial = 10 * time.Millisecond
	c.RetryBackoffMax = 100 * time.Millisecond
	// The core tests consume only their topic; the retry tests turn retry
	// and dead-letter topics on (see retryConfig).
	c.RetryTopicDelays = nil
	c.DLQEnabled = false
	return c
}

// running is a worker started in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs a worker until stop (or the end of the test).
func start(t *testing.T, cfg worker.Config, h handler.Handler, opts ...worker.Option) *running {
	t.Helper()
	opts = append([]worker.Option{worker.WithLogger(testLogger(t))}, opts...)
	w, err := worker.New(cfg, h, opts...)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	return runInBackground(t, w)
}

// runInBackground runs w until stop (or the end of the test).
func runInBackground(t *testing.T, w *worker.Worker) *running {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(c) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the worker and waits for Run to return nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v, want nil after a graceful stop", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return within 60s of cancellation")
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KW_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// produceKeyed writes n messages over the given number of keys; value is
// "key/seq", seq counting per key from 0, so order can be checked per key.
func (b *testBundle) produceKeyed(t *testing.T, n, keys int) {
	t.Helper()
	seq := make([]int, keys)
	err := b.cluster.ProduceN(ctx(t), b.topic, n, func(i int) ([]byte, []byte) {
		k := i % keys
		v := fmt.Sprintf("k%d/%d", k, seq[k])
		seq[k]++
		return fmt.Appendf(nil, "k%d", k), []byte(v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitCommitted waits until the group's committed offsets equal the topic's
// end offsets on every partition, read through kafkatest's own client.
func (b *testBundle) waitCommitted(t *testing.T, timeout time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for {
		end, err := b.cluster.EndOffsets(ctx(t), b.topic)
		if err != nil {
			t.Fatal(err)
		}
		com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for p, e := range end {
			if e > 0 && com[p] != e {
				ok = false
			}
		}
		if ok {
			return
		}
		last = fmt.Sprintf("end=%v committed=%v", end, com)
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets did not reach end offsets within %v: %s", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder is a handler that records every delivery and checks per-key
// order: each key's values must arrive as seq 0, 1, 2, ...
type recorder struct {
	mu       sync.Mutex
	next     map[string]int // next expected seq per key
	seen     map[string]int // deliveries per value
	handled  atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
	errs     []string
	delay    func(*handler.Message) time.Duration
	// allowRedelivery accepts a key going back to an earlier seq, as happens
	// after a crash or a discarded result: at-least-once, still in order.
	allowRedelivery bool
}

func newRecorder() *recorder {
	return &recorder{next: map[string]int{}, seen: map[string]int{}}
}

func (r *recorder) Handle(ctx context.Context, m *handler.Message) error {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if r.delay != nil {
		if d := r.delay(m); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	key, seq := parseValue(string(m.Value))
	r.mu.Lock()
	defer r.mu.Unlock()
	want := r.next[key]
	switch {
	case seq == want:
	case seq < want && r.allowRedelivery:
	default:
		r.errs = append(r.errs, fmt.Sprintf("key %s: got seq %d, want %d (p%d@%d)", key, seq, want, m.Partition, m.Offset))
	}
	r.next[key] = seq + 1
	r.seen[string(m.Value)]++
	r.handled.Add(1)
	return nil
}

func parseValue(v string) (string, int) {
	k, s, _ := strings.Cut(v, "/")
	var n int
	fmt.Sscanf(s, "%d", &n)
	return k, n
}

// check fails the test on any order violation and returns the number of
// distinct messages seen and how many were seen more than once.
func (r *recorder) check(t *testing.T) (distinct, dupes int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Fatalf("%d order violations, first: %s", len(r.errs), strings.Join(r.errs[:min(5, len(r.errs))], "; "))
	}
	for _, c := range r.seen {
		if c > 1 {
			dupes++
		}
	}
	return len(r.seen), dupes
}
