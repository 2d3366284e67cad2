package producer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/worker"
)

// A trace runs from the producer into the worker: the worker's delivery
// span is a child of the producer's send span.
func TestTraceRunsFromProducerToWorker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(ctx, "orders", 2); err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prop := propagation.TraceContext{}
	discard := slog.New(slog.DiscardHandler)

	pc := producer.DefaultConfig()
	pc.Brokers = cluster.Addrs()
	p, err := producer.New(pc, producer.WithTracerProvider(tp), producer.WithPropagator(prop),
		producer.WithRegisterer(prometheus.NewRegistry()), producer.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close(ctx) }()
	if _, _, err := p.Send(ctx, &producer.Message{Topic: "orders", Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}

	wc := worker.DefaultConfig()
	wc.Brokers, wc.GroupID, wc.Topics, wc.RetryTopicDelays, wc.DLQEnabled = cluster.Addrs(), "billing", []string{"orders"}, nil, false
	got := make(chan trace.SpanContext, 1)
	w, err := worker.New(wc, handler.HandlerFunc(func(ctx context.Context, _ *handler.Message) error {
		select {
		case got <- trace.SpanContextFromContext(ctx):
		default:
		}
		return nil
	}), worker.WithTracerProvider(tp), worker.WithPropagator(prop), worker.WithRegisterer(prometheus.NewRegistry()), worker.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	var consumed trace.SpanContext
	select {
	case consumed = <-got:
	case <-ctx.Done():
		t.Fatal("the worker did not handle the message")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	var send, process sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "send orders":
			send = s
		case "process orders":
			process = s
		}
	}
	if send == nil || process == nil {
		t.Fatalf("want a send and a process span, got %v", rec.Ended())
	}
	if process.SpanContext().SpanID() != consumed.SpanID() || process.Parent().SpanID() != send.SpanContext().SpanID() ||
		process.SpanContext().TraceID() != send.SpanContext().TraceID() {
		t.Fatalf("the worker's span %v (parent %v) is not a child of the producer's %v", process.SpanContext(), process.Parent(), send.SpanContext())
	}
}

// The producer reads the KAFKA_* connection variables exactly as the
// worker does: the same problems, word for word, and the same values.
func TestEnvReadLikeTheWorker(t *testing.T) {
	for i, env := range []map[string]string{
		{"KAFKA_BROKERS": "localhost", "KAFKA_BOOTSTRAP_SERVERS": "other:9092", "KAFKA_CONNECT_TIMEOUT": "soon",
			"KAFKA_VERSION": "banana", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_TLS_CA_FILE": "/nonexistent/ca.pem"},
		{"KAFKA_BROKERS": "a:9092", "KAFKA_CLIENT_ID": " ", "KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_TLS_ENABLED": "false", "KAFKA_TLS_SERVER_NAME": "x"},
		{"KAFKA_BROKERS": "a:9092", "KAFKA_SASL_USERNAME": "u", "KAFKA_CONNECT_TIMEOUT": "-1s", "KAFKA_TLS_CERT_FILE": "/nonexistent/c.pem"},
		{"KAFKA_BOOTSTRAP_SERVERS": " a:9092 , b:9092", "KAFKA_SASL_MECHANISM": "scram-sha-256", "KAFKA_SASL_USERNAME": "u",
			"KAFKA_SASL_PASSWORD": "p", "KAFKA_TLS_ENABLED": "true", "KAFKA_CLIENT_ID": "billing", "KAFKA_CONNECT_TIMEOUT": "5s"},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			for _, name := range []string{"KAFKA_BROKERS", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CLIENT_ID", "KAFKA_VERSION", "KAFKA_CONNECT_TIMEOUT",
				"KAFKA_TLS_ENABLED", "KAFKA_TLS_CA_FILE", "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE", "KAFKA_TLS_SERVER_NAME",
				"KAFKA_TLS_INSECURE_SKIP_VERIFY", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"} {
				t.Setenv(name, "")
				os.Unsetenv(name)
			}
			t.Setenv("KAFKA_GROUP_ID", "g")
			t.Setenv("KAFKA_TOPICS", "t")
			for k, v := range env {
				t.Setenv(k, v)
			}
			wc, werr := worker.ConfigFromEnv()
			pc, perr := producer.ConfigFromEnv()
			var wve *worker.ValidationError
			var pve *producer.ValidationError
			switch {
			case werr == nil && perr == nil:
				if !slices.Equal(wc.Brokers, pc.Brokers) || wc.ClientID != pc.ClientID || wc.ConnectTimeout != pc.ConnectTimeout ||
					wc.SASLMechanism != pc.SASLMechanism || wc.TLSEnabled != pc.TLSEnabled || wc.SASLPassword != pc.SASLPassword {
					t.Fatalf("worker read %v, producer %v", wc, pc)
				}
			case errors.As(werr, &wve) && errors.As(perr, &pve):
				if !slices.Equal(wve.Problems, pve.Problems) {
					t.Fatalf("worker:\n%v\nproducer:\n%v", werr, perr)
				}
			default:
				t.Fatalf("worker: %v; producer: %v", werr, perr)
			}
		})
	}
}
