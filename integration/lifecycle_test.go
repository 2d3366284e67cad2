package integration

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// A worker stopped gracefully mid-stream commits everything it finished; a
// new worker on the same group then handles the rest and nothing twice.
func TestGracefulStopThenRestartHandlesNothingTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n, keys = 3000, 100
	b.produceKeyed(t, n, keys)

	rec := newRecorder() // shared by both workers: strict order, duplicates counted
	rec.delay = func(*handler.Message) time.Duration { return 2 * time.Millisecond }
	cfg := b.config()
	cfg.Concurrency = 32

	first := start(t, cfg, rec)
	testutil.WaitFor(t, time.Minute, "a third handled", func() bool { return rec.handled.Load() >= n/3 })
	first.stop(t)
	handledByFirst := rec.handled.Load()
	if handledByFirst >= n {
		t.Fatalf("first worker handled everything (%d) before the stop; the test needs a mid-stream stop", handledByFirst)
	}
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	for _, o := range com {
		committed += o
	}
	t.Logf("first worker handled %d, committed %d at stop (%v)", handledByFirst, committed, com)

	second := start(t, cfg, rec)
	testutil.WaitFor(t, time.Minute, "all handled", func() bool { return rec.handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	second.stop(t)
	distinct, dupes := rec.check(t)
	if distinct != n || dupes != 0 {
		t.Fatalf("handled %d distinct with %d handled twice, want %d and 0", distinct, dupes, n)
	}
}

// Failing and panicking handlers are retried in place with backoff until
// they succeed; nothing is skipped, and other keys keep flowing meanwhile.
func TestFailingAndPanickingHandlersRecover(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	recs, err := b.cluster.Produce(ctx(t),
		kafkatest.Record{Topic: b.topic, Key: []byte("bad"), Value: []byte("bad/0")},
		kafkatest.Record{Topic: b.topic, Key: []byte("boom"), Value: []byte("boom/0")},
		kafkatest.Record{Topic: b.topic, Key: []byte("bad"), Value: []byte("bad/1")},
	)
	if err != nil {
		t.Fatal(err)
	}
	_ = recs
	const others = 200
	b.produceKeyed(t, others, 20)

	var mu sync.Mutex
	attempts := map[string][]time.Time{}
	rec := newRecorder()
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		v := string(m.Value)
		mu.Lock()
		attempts[v] = append(attempts[v], time.Now())
		n := len(attempts[v])
		mu.Unlock()
		switch {
		case v == "bad/0" && n <= 3:
			return errors.New("transient failure")
		case v == "boom/0" && n <= 2:
			panic("handler bug")
		}
		return rec.Handle(ctx, m)
	})
	cfg := b.config()
	cfg.RetryLocalAttempts = 10 // all in place: this test is about in-place retries
	cfg.RetryBackoffInitial = 200 * time.Millisecond
	cfg.RetryBackoffMax = time.Second
	cfg.Concurrency = 4
	w := start(t, cfg, h)
	testutil.WaitFor(t, 30*time.Second, "all handled", func() bool { return rec.handled.Load() >= others+3 })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)

	if distinct, dupes := rec.check(t); distinct != others+3 || dupes != 0 {
		t.Fatalf("handled %d distinct with %d duplicates, want %d and 0", distinct, dupes, others+3)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := len(attempts["bad/0"]); got != 4 {
		t.Errorf("bad/0 delivered %d times, want 4 (3 failures, then success)", got)
	}
	if got := len(attempts["boom/0"]); got != 3 {
		t.Errorf("boom/0 delivered %d times, want 3 (2 panics, then success)", got)
	}
	// Backoff: the first retry waits at least initial*(1-jitter) = 100ms.
	if gap := attempts["bad/0"][1].Sub(attempts["bad/0"][0]); gap < 100*time.Millisecond {
		t.Errorf("first retry after %v, want a backoff of at least 100ms", gap)
	}
	// bad/1 waits for bad/0, which needed at least ~3 backoffs.
	if !attempts["bad/1"][0].After(attempts["bad/0"][3]) {
		t.Errorf("bad/1 ran before bad/0 succeeded: key order broken")
	}
	// Other keys did not wait for the failing ones.
	var lastOther time.Time
	for v, ts := range attempts {
		if v != "bad/0" && v != "bad/1" && v != "boom/0" && ts[0].After(lastOther) {
			lastOther = ts[0]
		}
	}
	if !lastOther.Before(attempts["bad/0"][3]) {
		t.Errorf("other keys finished at %v, after bad/0 succeeded at %v: they waited for it", lastOther, attempts["bad/0"][3])
	}
}

// Partitions added to a subscribed topic at runtime are consumed without a
// restart.
func TestNewPartitionsAreConsumed(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	rec := newRecorder()
	cfg := b.config()
	cfg.MetadataRefresh = 300 * time.Millisecond
	w := start(t, cfg, rec)

	b.produceKeyed(t, 50, 5)
	testutil.WaitFor(t, 30*time.Second, "first partition consumed", func() bool { return rec.handled.Load() >= 50 })

	if err := b.cluster.SetPartitions(ctx(t), b.topic, 3); err != nil {
		t.Fatal(err)
	}
	var extra []kafkatest.Record
	for p := int32(1); p < 3; p++ {
		for i := range 20 {
			extra = append(extra, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: p,
				Key: []byte{byte('a' + p)}, Value: []byte{byte('a' + p), '/', byte('0' + i/10), byte('0' + i%10)}})
		}
	}
	if _, err := b.cluster.Produce(ctx(t), extra...); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "new partitions consumed", func() bool { return rec.handled.Load() >= 90 })
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if com[1] != 20 || com[2] != 20 {
		t.Fatalf("committed %v, want 20 on partitions 1 and 2", com)
	}
}

// Static membership (KAFKA_INSTANCE_ID): a worker restarted under the same
// instance id takes its place back and goes on where the first stopped.
func TestStaticMembershipRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const n = 400
	b.produceKeyed(t, n, 20)
	rec := newRecorder()
	rec.delay = func(*handler.Message) time.Duration { return time.Millisecond }
	cfg := b.config()
	cfg.InstanceID = "pod-0"
	first := start(t, cfg, rec)
	testutil.WaitFor(t, 30*time.Second, "some handled", func() bool { return rec.handled.Load() >= n/4 })
	first.stop(t)
	second := start(t, cfg, rec)
	testutil.WaitFor(t, 60*time.Second, "all handled", func() bool { return rec.handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	second.stop(t)
	if distinct, dupes := rec.check(t); distinct != n || dupes != 0 {
		t.Fatalf("handled %d distinct with %d twice, want %d and 0", distinct, dupes, n)
	}
}
