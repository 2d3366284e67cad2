package integration

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

func TestKeyOrderUnderRandomLatency(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n, keys = 4000, 50
	b.produceKeyed(t, n, keys)

	rec := newRecorder()
	rec.delay = func(*handler.Message) time.Duration { return time.Duration(rand.IntN(2000)) * time.Microsecond }
	cfg := b.config()
	cfg.Concurrency = 32
	w := start(t, cfg, rec)
	testutil.WaitFor(t, time.Minute, "all messages handled", func() bool { return rec.handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)

	distinct, dupes := rec.check(t)
	if distinct != n || dupes != 0 {
		t.Fatalf("handled %d distinct messages with %d duplicates, want %d and 0", distinct, dupes, n)
	}
	if rec.peak.Load() < 4 {
		t.Errorf("peak concurrency %d: keys did not run concurrently", rec.peak.Load())
	}
}
