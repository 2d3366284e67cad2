package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

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
	var logs testutil.Logs
	w, err := New(c, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }),
		WithLogger(logs.Logger()), WithRegisterer(prometheus.NewRegistry()))
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
	tries, fails := logs.Find(slog.LevelInfo, "connecting to Kafka"), logs.Find(slog.LevelWarn, "Kafka broker did not answer")
	if len(tries) < 3 || len(fails) != len(tries) {
		t.Errorf("want at least 3 logged attempts (backoff 100ms, 200ms, 400ms), each with its failure; got %d attempts, %d failures", len(tries), len(fails))
	}
	for i, rec := range tries {
		if got := testutil.Attr(rec, "attempt"); got != fmt.Sprint(i+1) {
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
