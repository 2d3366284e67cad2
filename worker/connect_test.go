package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kafkaworker/kafkaworker/handler"
)

// quietListener accepts connections and never answers. requests is closed
// when the first bytes arrive, clientClosed when a client closes.
func quietListener(t *testing.T) (addr string, requests, clientClosed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	req, closed := make(chan struct{}), make(chan struct{})
	var reqOnce, closedOnce sync.Once
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						reqOnce.Do(func() { close(req) })
					}
					if err != nil {
						if errors.Is(err, io.EOF) {
							closedOnce.Do(func() { close(closed) })
						}
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), req, closed
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func TestConnectProbeGivesUpOnSilentBroker(t *testing.T) {
	t.Parallel()
	addr, _, clientClosed := quietListener(t)
	began := time.Now()
	err := probeBroker(context.Background(), sarama.NewConfig(), addr, 300*time.Millisecond)
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("probe of a silent broker: %v, want no answer within 300ms", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("probe took %v, want about its 300ms timeout", took)
	}
	if !closedWithin(clientClosed, time.Second) {
		t.Error("the probe did not close its connection")
	}
}

func TestConnectProbeStopsOnCancel(t *testing.T) {
	t.Parallel()
	addr, requests, clientClosed := quietListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- probeBroker(ctx, sarama.NewConfig(), addr, time.Minute) }()
	if !closedWithin(requests, 10*time.Second) {
		t.Fatal("the probe sent nothing")
	}
	cancel() // the probe is blocked reading an answer that never comes
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled probe returned %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("the probe did not return within 1s of its context being cancelled")
	}
	if !closedWithin(clientClosed, time.Second) {
		t.Error("the cancelled probe did not close its connection")
	}
}

func TestConnectProbeAnsweringBroker(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, v := range []string{"", "0.11.0.0", "3.6.0"} {
		s := sarama.NewConfig()
		if v != "" {
			if s.Version, err = sarama.ParseKafkaVersion(v); err != nil {
				t.Fatal(err)
			}
		}
		if err := probeBroker(context.Background(), s, c.ListenAddrs()[0], 5*time.Second); err != nil {
			t.Errorf("probe (version %q) of an answering broker: %v", v, err)
		}
	}
}

// With no broker listening, awaitBroker retries with backoff, logging each
// attempt, and gives up after ConnectTimeout with the documented error.
func TestConnectAwaitBrokerRetriesThenGivesUp(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	_ = ln.Close()

	c, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_BROKERS": refused, "KAFKA_CONNECT_TIMEOUT": "700ms"}))
	if err != nil {
		t.Fatal(err)
	}
	var logs logRecords
	w, err := New(c, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }),
		WithLogger(slog.New(&logs)), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err = w.awaitBroker(context.Background())
	took := time.Since(began)
	want := "kafkaworker: no broker answered within 700ms (KAFKA_CONNECT_TIMEOUT) at [" + refused + "]: last error: " + refused + ": "
	if err == nil || !strings.HasPrefix(err.Error(), want) ||
		!strings.HasSuffix(err.Error(), "; check KAFKA_BROKERS, network and TLS/SASL settings") {
		t.Fatalf("got %v\nwant %s...; check KAFKA_BROKERS, network and TLS/SASL settings", err, want)
	}
	if took < 700*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %v, want about 700ms", took)
	}
	tries, fails := logs.messages(slog.LevelInfo, "connecting to Kafka"), logs.messages(slog.LevelWarn, "Kafka broker did not answer")
	if len(tries) < 3 || len(fails) != len(tries) {
		t.Errorf("want at least 3 logged attempts (backoff 100ms, 200ms, 400ms), each with its failure; got %d attempts, %d failures", len(tries), len(fails))
	}
	for i, rec := range tries {
		if got := recordAttr(rec, "attempt"); got != int64(i+1) {
			t.Errorf("attempt %d logged as attempt %v", i+1, got)
		}
	}
}

func TestConnectAwaitBrokerStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := &Worker{cfg: Config{Brokers: []string{"127.0.0.1:1"}, ConnectTimeout: time.Minute}, log: slog.New(slog.DiscardHandler)}
	if err := w.awaitBroker(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("awaitBroker with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestConnectOpenCancellable(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	t.Run("result", func(t *testing.T) {
		t.Parallel()
		v, err := openCancellable(context.Background(), log, func() (int, error) { return 7, nil },
			func(int) { t.Error("closed a result that was returned") })
		if v != 7 || err != nil {
			t.Fatalf("got %v, %v", v, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		release, closed := make(chan struct{}), make(chan int, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := openCancellable(ctx, log, func() (int, error) { <-release; return 7, nil }, func(v int) { closed <- v })
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
		case <-time.After(time.Second):
			t.Fatal("did not return within 1s of the cancel while open was blocked")
		}
		close(release) // open returns late: what it opened must be closed
		select {
		case v := <-closed:
			if v != 7 {
				t.Fatalf("closed %v, want what open returned (7)", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("what the abandoned open returned was not closed")
		}
	})
}

func TestMissingTopicErrorNamesEveryTopic(t *testing.T) {
	t.Parallel()
	err := sourceTopicsMissing([]string{"payments", "orders"})
	want := `kafkaworker: source topics do not exist: "orders", "payments": create them ` +
		`(e.g. kafka-topics.sh --create --topic orders --partitions <n>) or fix KAFKA_TOPICS`
	if err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	if got := sourceTopicsMissing([]string{"orders"}).Error(); !strings.HasPrefix(got, `kafkaworker: source topic does not exist: "orders": create it `) {
		t.Fatalf("one topic: %s", got)
	}
}

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu sync.Mutex
	rs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rs = append(l.rs, r.Clone())
	return nil
}

func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

func (l *logRecords) messages(level slog.Level, msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.rs {
		if r.Level == level && r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

func recordAttr(r slog.Record, key string) any {
	var v any
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.Any()
			return false
		}
		return true
	})
	return v
}
