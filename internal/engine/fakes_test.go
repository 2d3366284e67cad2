package engine

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// Fakes of the sarama interfaces the dispatcher and the partition use. Each
// embeds its interface, so a method the code under test starts calling
// without a fake behind it panics (nil embedded interface) instead of
// passing silently.

// fakeClaim is a claim whose Messages() channel the test feeds and closes.
type fakeClaim struct {
	sarama.ConsumerGroupClaim
	topic     string
	partition int32
	msgs      chan *sarama.ConsumerMessage
	next      atomic.Int64 // offset of the next message made; read as the high watermark
}

func newFakeClaim(topic string, partition int32) *fakeClaim {
	return &fakeClaim{topic: topic, partition: partition, msgs: make(chan *sarama.ConsumerMessage, 64)}
}

func (c *fakeClaim) Topic() string                            { return c.topic }
func (c *fakeClaim) Partition() int32                         { return c.partition }
func (c *fakeClaim) InitialOffset() int64                     { return 0 }
func (c *fakeClaim) HighWaterMarkOffset() int64               { return c.next.Load() }
func (c *fakeClaim) Messages() <-chan *sarama.ConsumerMessage { return c.msgs }

// message makes the claim's next message, with key.
func (c *fakeClaim) message(key string) *sarama.ConsumerMessage {
	o := c.next.Add(1) - 1
	return &sarama.ConsumerMessage{Topic: c.topic, Partition: c.partition, Offset: o, Key: []byte(key)}
}

// send puts one message per key into the claim's channel, as sarama's
// partition consumer would. The channel is buffered: send never blocks.
func (c *fakeClaim) send(t *testing.T, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if len(c.msgs) == cap(c.msgs) {
			t.Fatalf("fake claim channel full (%d)", cap(c.msgs))
		}
		c.msgs <- c.message(k)
	}
}

// fakeSession is a group session whose context the test cancels.
type fakeSession struct {
	sarama.ConsumerGroupSession
	ctx context.Context
}

func (s *fakeSession) Context() context.Context { return s.ctx }
func (s *fakeSession) MemberID() string         { return "member-1" }
func (s *fakeSession) GenerationID() int32      { return 1 }

// groupCall is one Pause or Resume the dispatcher made.
type groupCall struct {
	op string // "pause" or "resume"
	tp map[string][]int32
	at time.Time // bubble time
}

// fakeGroup records Pause and Resume.
type fakeGroup struct {
	sarama.ConsumerGroup
	mu    sync.Mutex
	calls []groupCall
}

func (g *fakeGroup) record(op string, tp map[string][]int32) {
	cp := make(map[string][]int32, len(tp))
	for k, v := range tp {
		cp[k] = slices.Clone(v)
	}
	g.mu.Lock()
	g.calls = append(g.calls, groupCall{op: op, tp: cp, at: time.Now()})
	g.mu.Unlock()
}

func (g *fakeGroup) Pause(tp map[string][]int32)  { g.record("pause", tp) }
func (g *fakeGroup) Resume(tp map[string][]int32) { g.record("resume", tp) }

func (g *fakeGroup) snapshot() []groupCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// checkBalanced fails unless calls alternate pause, resume, ..., end with a
// resume (or are empty), and all name exactly want.
func checkBalanced(t *testing.T, calls []groupCall, want map[string][]int32) {
	t.Helper()
	for i, c := range calls {
		wantOp := "pause"
		if i%2 == 1 {
			wantOp = "resume"
		}
		if c.op != wantOp {
			t.Fatalf("call %d is %s, want %s (calls: %v)", i, c.op, wantOp, opsOf(calls))
		}
		if !sameTP(c.tp, want) {
			t.Fatalf("call %d (%s) names %v, want exactly %v", i, c.op, c.tp, want)
		}
	}
	if len(calls)%2 != 0 {
		t.Fatalf("a pause was left behind: calls %v", opsOf(calls))
	}
}

func opsOf(calls []groupCall) []string {
	ops := make([]string, len(calls))
	for i, c := range calls {
		ops[i] = c.op
	}
	return ops
}

func sameTP(a, b map[string][]int32) bool {
	return maps.EqualFunc(a, b, func(x, y []int32) bool { return slices.Equal(x, y) })
}

func countOp(calls []groupCall, op string) int {
	n := 0
	for _, c := range calls {
		if c.op == op {
			n++
		}
	}
	return n
}

// fakeAdmin answers the previous owner's done-set lookup: committed offset
// 0, no metadata, so nothing is skipped.
type fakeAdmin struct {
	sarama.ClusterAdmin
}

func (fakeAdmin) ListConsumerGroupOffsets(_ string, tps map[string][]int32) (*sarama.OffsetFetchResponse, error) {
	resp := &sarama.OffsetFetchResponse{}
	for topic, ids := range tps {
		for _, id := range ids {
			resp.AddBlock(topic, id, &sarama.OffsetFetchResponseBlock{Offset: 0, Err: sarama.ErrNoError})
		}
	}
	return resp, nil
}

// handled is one handler call, as the recording handler saw it.
type handled struct {
	key    string
	offset int64
	topic  string
	part   int32
	gid    uint64 // goroutine that ran it
}

// recorder is a handler.Handler that records every call in start order,
// checks that no two messages of one key overlap, and blocks each call in
// block (when set) until it returns.
type recorder struct {
	mu      sync.Mutex
	runs    []handled
	active  map[string]int // running calls per key
	overlap []string       // keys seen running twice at once
	block   func(ctx context.Context, m *handler.Message)
}

func newRecorder(block func(ctx context.Context, m *handler.Message)) *recorder {
	return &recorder{active: map[string]int{}, block: block}
}

func (r *recorder) Handle(ctx context.Context, m *handler.Message) error {
	key := m.Topic + "/" + string(m.Key)
	r.mu.Lock()
	r.runs = append(r.runs, handled{key: string(m.Key), offset: m.Offset, topic: m.Topic, part: m.Partition, gid: goroutineID()})
	if r.active[key]++; r.active[key] > 1 {
		r.overlap = append(r.overlap, key)
	}
	r.mu.Unlock()
	if r.block != nil {
		r.block(ctx, m)
	}
	r.mu.Lock()
	r.active[key]--
	r.mu.Unlock()
	return nil
}

func (r *recorder) snapshot() []handled {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.runs)
}

// checkOncePerOffsetInKeyOrder fails unless offsets 0..n-1 of topic were
// each handled exactly once, every key's in increasing order, never two of
// one key at once.
func (r *recorder) checkOncePerOffsetInKeyOrder(t *testing.T, topic string, n int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.overlap) > 0 {
		t.Errorf("messages of one key ran concurrently: %v", r.overlap)
	}
	seen := map[int64]int{}
	last := map[string]int64{}
	for _, x := range r.runs {
		if x.topic != topic {
			continue
		}
		seen[x.offset]++
		if prev, ok := last[x.key]; ok && x.offset <= prev {
			t.Errorf("key %q: offset %d ran after %d", x.key, x.offset, prev)
		}
		last[x.key] = x.offset
	}
	for o := range n {
		if seen[o] != 1 {
			t.Errorf("offset %d handled %d times, want exactly once", o, seen[o])
		}
	}
	if len(seen) != int(n) {
		t.Errorf("handled %d distinct offsets, want %d", len(seen), n)
	}
}

// goroutineID parses the running goroutine's id from its stack header,
// "goroutine 123 [running]:".
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	b = b[:bytes.IndexByte(b, ' ')]
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

// latch is a channel closed once, by whichever of the test and its cleanup
// gets there first.
type latch struct {
	ch   chan struct{}
	once sync.Once
}

func newLatch() *latch { return &latch{ch: make(chan struct{})} }

func (l *latch) open()                 { l.once.Do(func() { close(l.ch) }) }
func (l *latch) done() <-chan struct{} { return l.ch }

// rig is a Consumer with its pool and fakes, built as the worker's run
// builds them, minus the Kafka clients and the committer.
type rig struct {
	g        *Consumer
	group    *fakeGroup
	pool     *Pool
	stopping *latch // Run's context done
	claims   []*claimed
	unblock  []func() // opens whatever the test's handlers block on
}

// testConfig is what the tests vary of a Consumer's settings; the
// defaults are the worker's (worker.DefaultConfig).
type testConfig struct {
	Concurrency     int
	MaxInFlight     int
	Ordering        Ordering
	ShutdownTimeout time.Duration
}

func defaultTestConfig() testConfig {
	return testConfig{Concurrency: 64, MaxInFlight: 1000, Ordering: OrderByKey, ShutdownTimeout: 30 * time.Second}
}

// testParams are a Consumer's parameters for fake claims with cfg, handing
// messages to h: no retry topics, metrics on a registry of its own, tracing
// off, the worker's default backoff and commit interval.
func testParams(tb testing.TB, h handler.Handler, cfg testConfig) Params {
	tb.Helper()
	m, err := telemetry.NewMetrics(prometheus.NewRegistry(), "g")
	if err != nil {
		tb.Fatal(err)
	}
	return Params{
		Group: "g", Ordering: cfg.Ordering, MaxInFlight: cfg.MaxInFlight,
		RetryBackoff: func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 100*time.Millisecond, 10*time.Second, 0
			b.Reset()
			return b
		},
		StuckAfter: 5 * time.Minute, TickEvery: time.Second, InitialOffset: sarama.OffsetOldest,
		Handler: h, Log: slog.New(slog.DiscardHandler), Tracing: telemetry.NewTracing(noop.NewTracerProvider(), nil), Metrics: m,
		Admin: fakeAdmin{}, Topology: forward.NewTopology([]string{"t", "u"}, 0, nil, nil),
		Deadlines: NewDeadlines(cfg.ShutdownTimeout, 60*time.Second), Base: context.Background(),
	}
}

// newRig builds a Consumer with the default settings adjusted by adjust,
// handing messages to h, with a pool of Concurrency goroutines. Call it
// inside the bubble when the test uses synctest: the pool's goroutines and
// channels belong to it. A cleanup stops everything, so that a failed test
// ends with its failure rather than with goroutines left blocked in the
// bubble.
func newRig(t *testing.T, h handler.Handler, adjust func(*testConfig)) *rig {
	t.Helper()
	cfg := defaultTestConfig()
	if adjust != nil {
		adjust(&cfg)
	}
	r := &rig{group: &fakeGroup{}, pool: NewPool(cfg.Concurrency), stopping: newLatch()}
	p := testParams(t, h, cfg)
	p.ConsumerGroup, p.Pool, p.Stopping = r.group, r.pool, r.stopping.done()
	r.g = New(p)
	t.Cleanup(r.forceStop)
	return r
}

// atCleanup registers what unblocks the test's handlers.
func (r *rig) atCleanup(unblock ...func()) { r.unblock = append(r.unblock, unblock...) }

func (r *rig) forceStop() {
	for _, f := range r.unblock {
		f()
	}
	r.stopping.open()
	for _, c := range r.claims {
		c.end()
		c.revoke()
		if c.runDone != nil {
			select {
			case <-c.runDone:
			case <-time.After(time.Minute): // a broken dispatcher; the failure is reported already
			}
		}
		c.p.drain(0)
	}
	r.pool.Stop(5 * time.Second)
}

// claimed is one claimed partition: its partition state and, once started,
// its dispatcher.
type claimed struct {
	claim   *fakeClaim
	sess    *fakeSession
	end     context.CancelFunc // ends the session: its context is done
	closing sync.Once
	p       *partition
	d       *dispatcher
	runDone chan struct{} // closed when the dispatcher's run returns
}

// claim builds partition id of topic as ConsumeClaim does, without starting
// its dispatcher.
func (r *rig) claim(topic string, id int32) *claimed {
	ctx, end := context.WithCancel(context.Background())
	c := &claimed{claim: newFakeClaim(topic, id), sess: &fakeSession{ctx: ctx}, end: end}
	c.p = r.g.newPartition(c.sess, c.claim)
	r.claims = append(r.claims, c)
	return c
}

// dispatch starts the claim's dispatcher, built as ConsumeClaim builds it.
func (r *rig) dispatch(c *claimed) {
	c.d = newDispatcher(r.g, c.p, c.claim)
	c.runDone = make(chan struct{})
	go func() {
		defer close(c.runDone)
		c.d.run(c.sess.Context().Done())
	}()
}

// revoke closes the claim's Messages(), as sarama does when the partition
// is revoked or the session ends.
func (c *claimed) revoke() { c.closing.Do(func() { close(c.claim.msgs) }) }

// waitReturned fails the test unless the dispatcher's run returns within
// a minute, after what was its end: a revocation or the session's end.
func (c *claimed) waitReturned(t *testing.T, after string) {
	t.Helper()
	select {
	case <-c.runDone:
	case <-time.After(time.Minute):
		t.Fatalf("the dispatcher did not return after %s", after)
	}
}

func (c *claimed) returned() bool {
	select {
	case <-c.runDone:
		return true
	default:
		return false
	}
}

// shutdown ends what is still running, as release and Worker.run do: the
// session, the partition's drain, the pool. Handlers must be unblocked
// before. It fails the test if a goroutine is left running.
func (r *rig) shutdown(t *testing.T, cs ...*claimed) {
	t.Helper()
	for _, c := range cs {
		c.end()
		if c.runDone != nil {
			c.waitReturned(t, "its session ended")
		}
		if n := c.p.drain(time.Second); n != 0 {
			t.Errorf("%d handlers still running at shutdown", n)
		}
	}
	if !r.pool.Stop(time.Second) {
		t.Error("pool goroutines still running at shutdown")
	}
}

// embeddedBroker starts an embedded Kafka broker for the test, closed at
// its end, and a context bounding the test's requests; it skips the test
// under -short.
func embeddedBroker(t *testing.T) (*kafkatest.Cluster, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs an embedded Kafka broker; skipped under -short")
	}
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return cluster, ctx
}
