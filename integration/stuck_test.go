package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// linesWith returns the log lines that contain every one of parts.
func linesWith(logs *testutil.Buffer, parts ...string) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// A message held longer than WORKER_STUCK_AFTER is reported once, at WARN,
// with where it is and how long it has been held but never its payload
// (its key only at Debug), and once more at INFO when it finishes. The
// oldest-in-flight-age gauge shows its age while it is held, and its series
// is removed when the partition is released.
func TestStuckMessageIsReportedOnceAndMeasured(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.cluster.Produce(ctx(t),
		kafkatest.Record{Topic: b.topic, Key: []byte("secret-key"), Value: []byte("secret-payload")},
		kafkatest.Record{Topic: b.topic, Key: []byte("other"), Value: []byte("fine")}); err != nil {
		t.Fatal(err)
	}
	h := newStuckHandler(func(m *handler.Message) bool { return string(m.Value) == "secret-payload" })
	cfg := b.config()
	cfg.StuckAfter = 500 * time.Millisecond
	reg := prometheus.NewRegistry()
	var logs testutil.Buffer
	w := start(t, cfg, h, worker.WithRegisterer(reg), worker.WithLogger(logs.TextLogger()))

	age := func() float64 { return gauge(t, reg, worker.MetricOldestInFlightAge, b.group, b.topic, "0") }
	testutil.WaitFor(t, 30*time.Second, "the stuck message reported", func() bool {
		return len(linesWith(&logs, "level=WARN", "message stuck")) > 0
	})
	testutil.WaitFor(t, 30*time.Second, "the age gauge past 1.5s", func() bool { return age() >= 1.5 })
	warns := linesWith(&logs, "level=WARN", "message stuck")
	if len(warns) != 1 {
		t.Fatalf("%d WARN lines for one stuck message, want 1:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	for _, want := range []string{"messaging.kafka.offset=0", "attempt=1", "held_for=", b.topic} {
		if !strings.Contains(warns[0], want) {
			t.Errorf("stuck WARN lacks %q: %s", want, warns[0])
		}
	}
	for _, line := range linesWith(&logs, "secret-") {
		if !strings.Contains(line, "level=DEBUG") {
			t.Errorf("payload or key logged above Debug: %s", line)
		}
	}

	close(h.release)
	testutil.WaitFor(t, 30*time.Second, "the finish reported", func() bool {
		return len(linesWith(&logs, "level=INFO", "stuck message finished", "messaging.kafka.offset=0")) == 1
	})
	testutil.WaitFor(t, 30*time.Second, "the age gauge back near 0", func() bool { return age() < 0.5 })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if n := series(t, reg, worker.MetricOldestInFlightAge); n != 0 {
		t.Fatalf("%d oldest-in-flight-age series left after the partition was released, want 0", n)
	}
}
