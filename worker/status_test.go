package worker

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// get serves path from the worker's status endpoints.
func get(t *testing.T, w *Worker, path string) (string, http.Header) {
	t.Helper()
	mux := http.NewServeMux()
	w.mountStatus(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	return rec.Body.String(), rec.Header()
}

// Before Run the status says why the worker is not ready, lists nothing,
// and shows the configuration with the password only as [set].
func TestStatusBeforeRunHidesSecrets(t *testing.T) {
	t.Parallel()
	w, _ := newFakeWorker(t, handler.HandlerFunc(nil), []string{"orders"}, func(c *Config) {
		c.SASLMechanism, c.SASLUsername, c.SASLPassword = "PLAIN", "svc", "hunter2-secret"
		c.RetryTopicDelays = []time.Duration{10 * time.Second}
	})
	body, hdr := get(t, w, "/status.json")
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"generated_at", "worker", "throughput", "partitions", "retry_tiers", "failures", "config"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status.json lacks %q", k)
		}
	}
	if string(raw["partitions"]) != "[]" || string(raw["failures"]) != "[]" {
		t.Errorf("partitions %s, failures %s: want empty lists", raw["partitions"], raw["failures"])
	}
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if s.Worker.Group != "g" || s.Worker.Ready || s.Worker.ReadyReason != "not in a group session" || !s.Worker.Healthy {
		t.Errorf("worker %+v", s.Worker)
	}
	want := TierStatus{Source: "orders", Tier: 1, Topic: "orders.g.retry.1", DelaySeconds: 10}
	if len(s.RetryTiers) != 1 || s.RetryTiers[0] != want {
		t.Errorf("retry tiers %+v, want [%+v]", s.RetryTiers, want)
	}
	cfg := map[string]string{}
	for _, e := range s.Config {
		cfg[e.Name] = e.Value
	}
	if cfg["security.sasl_password"] != "[set]" || cfg["security.sasl_username"] != "svc" || cfg["group"] != "g" {
		t.Errorf("config %v", cfg)
	}
	page, _ := get(t, w, "/status")
	for name, text := range map[string]string{"status.json": body, "/status": page} {
		if strings.Contains(text, "hunter2") {
			t.Errorf("%s shows the SASL password", name)
		}
	}
	for _, want := range []string{`<meta http-equiv="refresh" content="2">`, "orders.g.retry.1", "not in a group session", `fetch("status.json"`} {
		if !strings.Contains(page, want) {
			t.Errorf("/status lacks %q", want)
		}
	}
}

// The page shows every number of the status, marks a stuck partition, and
// escapes error text.
func TestRenderStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	committed, oldest := int64(17), int64(18)
	s := Status{
		GeneratedAt: now,
		Worker:      WorkerStatus{Group: "g", MemberID: "member-1", Generation: 4, Ready: true, Healthy: true},
		Throughput: ThroughputStatus{Consumed: 20, Totals: countsOf([metricdef.NumResults]uint64{11, 2, 1, 1}), WindowSeconds: 300,
			Rates: []RatePoint{{Time: now.Add(-time.Second), Handled: 8, Success: 8}, {Time: now, Handled: 4, Success: 2, Error: 2}}},
		Partitions: []PartitionStatus{{Topic: "orders", Partition: 2, CommittedOffset: &committed, EndOffset: 25, Lag: 8,
			Held: 7, InFlight: 1, OldestOffset: &oldest, OldestAgeSeconds: 75, Stuck: true}},
		Failures: []FailureStatus{{Time: now, Topic: "orders", Partition: 2, Offset: 18, Attempt: 1, ErrorType: "error",
			Error: "<script>alert(1)</script>", Destination: DestinationInPlace}},
	}
	var buf bytes.Buffer
	if err := renderStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	row := `<tr class="stuck" data-topic="orders" data-partition="2"><td>orders</td><td class="num">2</td><td class="num">17</td>` +
		`<td class="num">25</td><td class="num">8</td><td class="num">7</td><td class="num">1</td><td class="num">18</td>` +
		`<td class="num">1m15s stuck</td><td>no</td></tr>`
	for _, want := range []string{row, `<b id="handled-total">15</b>`, "member-1", "&lt;script&gt;alert(1)&lt;/script&gt;",
		"retried in place", `points="598.0,16.0 600.0,67.0"`, "max 8/s"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(page, "<script>alert(1)") {
		t.Error("error text not escaped")
	}
}

// The public destination names are the status board's.
func TestDestinationsAreTheBoards(t *testing.T) {
	t.Parallel()
	if DestinationInPlace != telemetry.DestinationInPlace || DestinationRetryTier != telemetry.DestinationRetryTier ||
		DestinationDeadLetter != telemetry.DestinationDeadLetter {
		t.Fatal("worker.Destination* differ from the board's")
	}
}

// newFakeWorker builds a Worker for fake claims on topics, with no retry
// topics, metrics on a registry of its own, tracing off and no HTTP server;
// adjust changes the configuration first.
func newFakeWorker(tb testing.TB, h handler.Handler, topics []string, adjust func(*Config)) (*Worker, Config) {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"fake:9092"}
	cfg.GroupID = "g"
	cfg.Topics = topics
	cfg.RetryTopicDelays = nil
	cfg.DLQEnabled = false
	if adjust != nil {
		adjust(&cfg)
	}
	w, err := New(cfg, h,
		WithLogger(slog.New(slog.DiscardHandler)),
		WithRegisterer(prometheus.NewRegistry()),
		WithTracerProvider(noop.NewTracerProvider()),
		WithHTTPServer(false))
	if err != nil {
		tb.Fatal(err)
	}
	return w, cfg
}
