package integration

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// A broker that accepts connections and never answers: Run gives up after
// KAFKA_CONNECT_TIMEOUT, not after sarama's minutes, with an error naming
// the variable and the broker, and logs each attempt meanwhile.
func TestConnectSilentBrokerTimesOut(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	sb := newSilentBroker(t)
	cfg := b.config()
	cfg.Brokers = []string{sb.addr()}
	cfg.ConnectTimeout = 2 * time.Second
	logs := &testutil.Logs{}

	began := time.Now()
	r := runAsync(t, cfg, worker.WithLogger(logs.Logger()))
	err := r.wait(t, cfg.ConnectTimeout+3*time.Second)
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_CONNECT_TIMEOUT") || !strings.Contains(err.Error(), sb.addr()) {
		t.Fatalf("Run returned %v, want an error naming KAFKA_CONNECT_TIMEOUT and %s", err, sb.addr())
	}
	if took < cfg.ConnectTimeout*9/10 {
		t.Errorf("Run gave up after %v, before KAFKA_CONNECT_TIMEOUT (%v)", took, cfg.ConnectTimeout)
	}
	if sb.accepted.Load() == 0 {
		t.Error("the worker never connected to the silent broker")
	}
	tries := logs.Find(slog.LevelInfo, "connecting to Kafka")
	if len(tries) == 0 || testutil.Attr(tries[0], "broker") != sb.addr() || testutil.Attr(tries[0], "attempt") != "1" {
		t.Errorf("want an Info %q with broker=%s attempt=1 before the first attempt; got %v", "connecting to Kafka", sb.addr(), tries)
	}
	if fails := logs.Find(slog.LevelWarn, "Kafka broker did not answer"); len(fails) < len(tries) || testutil.Attr(fails[0], "error") == "" {
		t.Errorf("want a Warn with the error for each of the %d failed attempts; got %v", len(tries), fails)
	}
}

// Cancelling Run while it waits for a silent broker's answer stops it at
// once: Run returns nil within a second and the connection is closed.
func TestConnectCancelWhileWaitingForAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	sb := newSilentBroker(t)
	cfg := b.config()
	cfg.Brokers = []string{sb.addr()}
	cfg.ConnectTimeout = time.Minute // not what ends it
	logs := &testutil.Logs{}
	r := start(t, cfg, newRecorder(), worker.WithLogger(logs.Logger()))

	// The first request bytes arriving means the worker is connected and
	// now blocked reading an answer that never comes.
	waitClosed(t, sb.firstRequest, 10*time.Second, "the worker's first request to the silent broker")
	stopWithin(t, r, time.Second)
	waitClosed(t, sb.closedByClient, time.Second, "the worker to close its connection to the silent broker")
	if fails := logs.Find(slog.LevelWarn, "Kafka broker did not answer"); len(fails) > 0 {
		t.Errorf("a cancel is not a failed attempt; got %v", fails)
	}
}

// A Kafka broker that accepts connections but never answers ApiVersions or
// Metadata (a hung broker): the same bound as for a silent socket.
func TestConnectKafkaNeverAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	requireFake(t, b)
	fake := b.cluster.Fake()
	var swallowed atomic.Int64
	for _, key := range []int16{kmsg.ApiVersions.Int16(), kmsg.Metadata.Int16()} {
		fake.ControlKey(key, func(kmsg.Request) (kmsg.Response, error, bool) {
			fake.KeepControl()
			swallowed.Add(1)
			return nil, nil, true // handled, with no response: the connection stays silent
		})
	}
	cfg := b.config()
	cfg.ConnectTimeout = 2 * time.Second
	logs := &testutil.Logs{}

	r := runAsync(t, cfg, worker.WithLogger(logs.Logger()))
	err := r.wait(t, cfg.ConnectTimeout+3*time.Second)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_CONNECT_TIMEOUT") || !strings.Contains(err.Error(), cfg.Brokers[0]) {
		t.Fatalf("Run returned %v, want an error naming KAFKA_CONNECT_TIMEOUT and %s", err, cfg.Brokers[0])
	}
	if swallowed.Load() == 0 {
		t.Fatal("no request reached the broker's control: the test did not test a silent broker")
	}
	if len(logs.Find(slog.LevelInfo, "connecting to Kafka")) == 0 {
		t.Error("no connecting attempt was logged")
	}
}

// A broker that answers the probe but never a metadata request holds
// sarama.NewClient for minutes: a cancel still makes Run return within a
// second, and what connect was opening finishes and is closed in the
// background once the broker goes away.
func TestConnectCancelWhileOpeningClients(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	requireFake(t, b)
	fake := b.cluster.Fake()
	asked := make(chan struct{})
	var once sync.Once
	fake.ControlKey(kmsg.Metadata.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		once.Do(func() { close(asked) })
		return nil, nil, true
	})
	logs := &testutil.Logs{}
	r := start(t, b.config(), newRecorder(), worker.WithLogger(logs.Logger()))
	waitClosed(t, asked, 10*time.Second, "a metadata request")
	testutil.WaitFor(t, 10*time.Second, "the probe's answer", func() bool {
		return len(logs.Find(slog.LevelInfo, "Kafka broker answered")) > 0
	})
	stopWithin(t, r, time.Second)

	// sarama's NewClient is still blocked; closing the broker ends it.
	b.cluster.Close()
	testutil.WaitFor(t, 30*time.Second, "the abandoned connect to finish", func() bool {
		return len(logs.Find(slog.LevelDebug, "connecting, abandoned when Run's context was cancelled, has finished; what it opened is closed")) > 0
	})
}

// A missing source topic fails Run at once, naming every missing topic and
// what to do, whether retry topics are off or on; and checking does not
// create the topic.
func TestMissingTopicFailsStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		retry bool
	}{{"without retry topics", false}, {"with retry topics", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			missingA, missingB := uniqueName(t, "missing-a"), uniqueName(t, "missing-b")
			cfg := b.config()
			if tc.retry {
				cfg = b.retryConfig(1, time.Second)
			}
			cfg.Topics = []string{missingB, b.topic, missingA}
			err := runAsync(t, cfg).wait(t, 5*time.Second)
			wantMissingTopics(t, err, b.topic, missingA, missingB)
			if tc.retry && strings.Contains(err.Error(), "retry and dead-letter topics are not ready") {
				t.Errorf("one error for a missing source topic, not the retry topics' as well: %v", err)
			}
			// Had the check created them, a second start would succeed.
			err = runAsync(t, cfg).wait(t, 5*time.Second)
			wantMissingTopics(t, err, b.topic, missingA, missingB)
		})
	}
}

// Against a broker that creates topics on metadata requests that allow it
// (auto.create.topics.enable, on by default in Apache Kafka), the check
// still reports the topic missing, and it stays missing.
func TestMissingTopicNotAutoCreated(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c, err := kafkatest.NewCluster(kafkatest.WithKfakeOptions(kfake.AllowAutoTopicCreation()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	b := &testBundle{cluster: c, topic: uniqueName(t, "topic"), group: uniqueName(t, "group")}
	err = runAsync(t, b.config()).wait(t, 5*time.Second)
	wantMissingTopics(t, err, "", b.topic)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(b.topic) {
		t.Fatalf("checking for %q created it", b.topic)
	}
}

func wantMissingTopics(t *testing.T, err error, present string, missing ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("Run started with missing source topics")
	}
	msg := err.Error()
	for _, m := range missing {
		if !strings.Contains(msg, strconv.Quote(m)) {
			t.Errorf("error does not name missing topic %q: %v", m, err)
		}
	}
	if !strings.Contains(msg, "do not exist") && !strings.Contains(msg, "does not exist") || !strings.Contains(msg, "KAFKA_TOPICS") {
		t.Errorf("error does not say the topics do not exist and what to do: %v", err)
	}
	if present != "" && strings.Contains(msg, strconv.Quote(present)) {
		t.Errorf("error names %q, which exists: %v", present, err)
	}
	var mt *worker.MissingTopicsError
	if !errors.As(err, &mt) || !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		t.Fatalf("Run returned %T, want a *worker.MissingTopicsError wrapping sarama.ErrUnknownTopicOrPartition", err)
	}
	want := slices.Sorted(slices.Values(missing))
	if !slices.Equal(mt.Topics, want) {
		t.Errorf("MissingTopicsError.Topics = %v, want %v", mt.Topics, want)
	}
}

// runResult is a Run in the background that the test expects to end by
// itself; unlike start, it does not insist on nil.
type runResult struct {
	done chan struct{}
	err  error
}

func runAsync(t *testing.T, cfg worker.Config, opts ...worker.Option) *runResult {
	t.Helper()
	opts = append([]worker.Option{worker.WithLogger(testLogger(t))}, opts...)
	w, err := worker.New(cfg, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }), opts...)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	c, cancel := context.WithCancel(context.Background())
	r := &runResult{done: make(chan struct{})}
	go func() { defer close(r.done); r.err = w.Run(c) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of cancellation")
		}
	})
	return r
}

// wait returns Run's result, failing the test if it takes longer than d.
func (r *runResult) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(d):
		t.Fatalf("Run did not return within %v", d)
		return nil
	}
}

// stopWithin cancels a started worker and fails unless Run returns nil
// within d.
func stopWithin(t *testing.T, r *running, d time.Duration) {
	t.Helper()
	cancel := r.cancel
	r.cancel = nil // the cleanup must not stop it again
	began := time.Now()
	cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v after a cancel, want nil", err)
		}
	case <-time.After(d):
		t.Fatalf("Run did not return within %v of its context being cancelled", d)
	}
	t.Logf("Run returned %v after the cancel", time.Since(began).Round(time.Millisecond))
}

func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// silentBroker listens on loopback, accepts connections and reads what is
// sent, but never answers: a hung broker, or a port that is not Kafka.
type silentBroker struct {
	ln             net.Listener
	accepted       atomic.Int64
	firstRequest   chan struct{} // closed when the first bytes arrive
	closedByClient chan struct{} // closed when a client closes its connection
	firstOnce      sync.Once
	closedOnce     sync.Once

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newSilentBroker(t *testing.T) *silentBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentBroker{ln: ln, firstRequest: make(chan struct{}), closedByClient: make(chan struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *silentBroker) addr() string { return s.ln.Addr().String() }

func (s *silentBroker) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.swallow(c)
	}
}

func (s *silentBroker) swallow(c net.Conn) {
	defer s.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			s.firstOnce.Do(func() { close(s.firstRequest) })
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.closedOnce.Do(func() { close(s.closedByClient) })
			}
			return
		}
	}
}

func (s *silentBroker) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
