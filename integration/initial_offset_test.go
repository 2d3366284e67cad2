package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// initialOffsets runs a test under KAFKA_INITIAL_OFFSET=oldest and =newest:
// what the group owes must survive a restart under both.
func initialOffsets(t *testing.T, test func(t *testing.T, initial worker.InitialOffset)) {
	t.Helper()
	for _, initial := range []worker.InitialOffset{worker.OffsetOldest, worker.OffsetNewest} {
		t.Run(string(initial), func(t *testing.T) {
			t.Parallel()
			test(t, initial)
		})
	}
}

// waitStartCommitted waits until the group has a committed offset on every
// partition of topic: a claim with no committed offset commits its
// resolved start at once, before any message is handled.
func (b *testBundle) waitStartCommitted(t *testing.T, topic string, partitions int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "a committed start offset on every partition of "+topic, func() bool {
		com, err := b.cluster.CommittedOffsets(ctx(t), b.group, topic)
		return err == nil && len(com) == partitions
	})
}

// A message forwarded to retry tier 1 is handled after the worker restarts
// before the tier is due: the tier's partition was committed at its start
// when first claimed (and a tier always starts at its oldest offset), so
// the next owner does not start it at its end. (With cooperative-sticky the
// tiers are claimed only once they hold work, by their own member: the
// forward claims them here.)
func TestForwardedMessageSurvivesRestartBeforeDue(t *testing.T) {
	t.Parallel()
	initialOffsets(t, func(t *testing.T, initial worker.InitialOffset) {
		b := setup(t, 1)
		cfg := b.retryConfig(1, 2*time.Second)
		cfg.InitialOffset = initial
		var got deliveries
		var healed atomic.Bool
		h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
			got.add(ctx, m)
			if !healed.Load() {
				return flakyError{"down"}
			}
			return nil
		})
		w := start(t, cfg, h)
		b.waitStartCommitted(t, b.topic, 1)
		if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("k"), Value: []byte("owed")}); err != nil {
			t.Fatal(err)
		}
		b.waitRecords(t, b.tierTopic(1), 1)
		b.waitStartCommitted(t, b.tierTopic(1), 1)
		w.stop(t) // before the tier's 2s delay is over
		if n := len(got.of("owed")); n != 1 {
			t.Fatalf("delivered %d times before the restart, want 1 (then forwarded)", n)
		}

		healed.Store(true)
		w2 := start(t, cfg, h)
		testutil.WaitFor(t, 30*time.Second, "the forwarded message handled from the tier after the restart", func() bool {
			return len(got.of("owed")) == 2
		})
		b.waitAllCommitted(t, b.topic, b.tierTopic(1))
		w2.stop(t)
		if d := got.of("owed"); d[1].topic != b.tierTopic(1) {
			t.Fatalf("second delivery came from %s, want the tier %s", d[1].topic, b.tierTopic(1))
		}
	})
}

// Messages backing off in place when the worker stops are handled by the
// next worker: nothing was committed past them, and the partition had a
// committed start, so the next owner does not resolve newest again.
func TestBackingOffMessagesSurviveRestart(t *testing.T) {
	t.Parallel()
	initialOffsets(t, func(t *testing.T, initial worker.InitialOffset) {
		b := setup(t, 1)
		cfg := b.config()
		cfg.InitialOffset = initial
		cfg.RetryBackoffInitial, cfg.RetryBackoffMax = 500*time.Millisecond, 500*time.Millisecond
		var got deliveries
		var healed atomic.Bool
		var succeeded valueSet
		h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
			got.add(ctx, m)
			if !healed.Load() {
				return flakyError{"down"}
			}
			succeeded.add(string(m.Value))
			return nil
		})
		w := start(t, cfg, h)
		b.waitStartCommitted(t, b.topic, 1)
		values := []string{"m0", "m1", "m2", "m3", "m4"}
		for i, v := range values {
			key := []byte{byte('a' + i)} // five keys: all five back off at once
			if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: key, Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
		}
		testutil.WaitFor(t, 30*time.Second, "all five tried once", func() bool {
			for _, v := range values {
				if len(got.of(v)) == 0 {
					return false
				}
			}
			return true
		})
		w.stop(t)

		healed.Store(true)
		w2 := start(t, cfg, h)
		b.waitCommitted(t, 30*time.Second)
		w2.stop(t)
		lost := 0
		for _, v := range values {
			if !succeeded.has(v) {
				lost++
			}
		}
		if lost > 0 {
			t.Fatalf("%d of %d messages backing off at the stop were never handled after it", lost, len(values))
		}
	})
}

// valueSet is a set of message values, safe for concurrent use.
type valueSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *valueSet) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]bool{}
	}
	s.m[v] = true
}

func (s *valueSet) has(v string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[v]
}

// A partition that never had traffic gets a committed start when first
// claimed, so a record produced while the group restarts is handled, not
// skipped by a second resolution of newest.
func TestRecordProducedDuringRestartOnIdlePartition(t *testing.T) {
	t.Parallel()
	initialOffsets(t, func(t *testing.T, initial worker.InitialOffset) {
		b := setup(t, 2)
		cfg := b.config()
		cfg.InitialOffset = initial
		rec := newRecorder()
		w := start(t, cfg, rec)
		b.waitStartCommitted(t, b.topic, 2)
		w.stop(t)
		if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Explicit: true, Partition: 1,
			Key: []byte("k"), Value: []byte("k/0")}); err != nil {
			t.Fatal(err)
		}
		w2 := start(t, cfg, rec)
		testutil.WaitFor(t, 30*time.Second, "the record produced during the restart handled", func() bool { return rec.handled.Load() == 1 })
		b.waitCommitted(t, 30*time.Second)
		w2.stop(t)
	})
}
