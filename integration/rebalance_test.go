package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// Workers join and leave mid-stream, under each rebalance strategy: nothing
// is lost, each key's messages are handled strictly in order and none twice
// (a revoked partition's running handlers finish within the drain deadline,
// and what finished behind an unfinished offset travels in the done-set),
// and the group ends committed at the end offsets.
func TestRebalanceChurn(t *testing.T) {
	t.Parallel()
	for _, strategy := range []worker.RebalanceStrategy{worker.StrategySticky, worker.StrategyRange, worker.StrategyCooperativeSticky} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 6)
			const n, keys = 12000, 300
			b.produceKeyed(t, n, keys)

			rec := newRecorder()
			rec.delay = func(*handler.Message) time.Duration { return 500 * time.Microsecond }
			cfg := b.config()
			cfg.RebalanceStrategy = strategy
			cfg.Concurrency = 16

			at := func(k int64) {
				testutil.WaitFor(t, time.Minute, "progress", func() bool { return rec.handled.Load() >= k })
			}
			w1 := start(t, cfg, rec)
			at(1500)
			w2 := start(t, cfg, rec)
			at(4000)
			w3 := start(t, cfg, rec)
			at(6500)
			w1.stop(t)
			at(9000)
			w2.stop(t)
			testutil.WaitFor(t, time.Minute, "all handled", func() bool {
				rec.mu.Lock()
				defer rec.mu.Unlock()
				return len(rec.seen) >= n
			})
			b.waitCommitted(t, 30*time.Second)
			w3.stop(t)

			if distinct, dupes := rec.check(t); distinct != n || dupes != 0 {
				t.Fatalf("handled %d distinct messages, %d of them twice; want %d and 0", distinct, dupes, n)
			}
		})
	}
}

// A handler that outlives the revoke deadline (it ignores its context) has
// its result discarded: the partition's new owner handles that message
// again, because the old owner never marked it. The head of each partition
// is stuck and the in-flight budget is tiny, so the revoked partition's
// dispatcher is holding back when the revocation comes; in cooperative mode
// it must still notice it (sarama only closes Messages()) and let go within
// the rebalance timeout.
func TestRevokedSlowHandlerIsFenced(t *testing.T) {
	t.Parallel()
	for _, strategy := range []worker.RebalanceStrategy{worker.StrategyRange, worker.StrategyCooperativeSticky} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			var recs []kafkatest.Record
			for i := range 40 {
				recs = append(recs, kafkatest.Record{Topic: b.topic, Explicit: true, Partition: int32(i % 2),
					Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "p%d/%d", i%2, i/2)})
			}
			if _, err := b.cluster.Produce(ctx(t), recs...); err != nil {
				t.Fatal(err)
			}

			var mu sync.Mutex
			deliveries := map[string]int{}
			release := make(chan struct{})
			slow := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
				mu.Lock()
				deliveries[string(m.Value)]++
				first := deliveries[string(m.Value)] == 1
				mu.Unlock()
				if m.Offset == 0 && first {
					<-release // the head of each partition hangs, ignoring ctx
				}
				return nil
			})
			redelivered := func() bool {
				mu.Lock()
				defer mu.Unlock()
				return deliveries["p0/0"] >= 2 || deliveries["p1/0"] >= 2
			}
			cfg := b.config()
			cfg.RebalanceTimeout = 5 * time.Second // revoke drain: 3.5s
			cfg.RebalanceStrategy = strategy
			cfg.MaxInFlight = 3
			var logs testutil.Buffer
			w1 := start(t, cfg, slow, worker.WithLogger(logs.TextLogger()))
			testutil.WaitFor(t, 30*time.Second, "both partition heads stuck", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return deliveries["p0/0"] == 1 && deliveries["p1/0"] == 1
			})

			w2 := start(t, cfg, slow)
			// One partition moves to w2: its stuck head must be handled again.
			testutil.WaitFor(t, 20*time.Second, "a stuck head redelivered by its new owner", redelivered)
			if strings.Contains(logs.String(), "did not exit within") {
				t.Fatalf("the revoked partition was not let go within the rebalance timeout:\n%s", logs.String())
			}
			close(release)
			b.waitCommitted(t, 30*time.Second)
			w2.stop(t)
			w1.stop(t)
		})
	}
}

// A rolling deploy under the default (cooperative-sticky) strategy: three
// workers, each replaced in turn while messages flow. Nothing is lost and
// nothing is handled twice or out of order.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, 8)
	const n, keys = 16000, 400
	b.produceKeyed(t, n, keys)

	rec := newRecorder()
	rec.delay = func(*handler.Message) time.Duration { return 300 * time.Microsecond }
	cfg := b.config()
	cfg.Concurrency = 8
	if cfg.RebalanceStrategy != worker.StrategyCooperativeSticky {
		t.Fatalf("default strategy is %q; this test is for the default", cfg.RebalanceStrategy)
	}
	at := func(k int64) {
		testutil.WaitFor(t, time.Minute, "progress", func() bool { return rec.handled.Load() >= k })
	}

	ws := []*running{start(t, cfg, rec), start(t, cfg, rec), start(t, cfg, rec)}
	at(2000)
	for i := range ws {
		ws[i].stop(t)
		ws[i] = start(t, cfg, rec)
		at(int64(2000 + (i+1)*3500))
	}
	testutil.WaitFor(t, time.Minute, "all handled", func() bool { return rec.handled.Load() >= n })
	b.waitCommitted(t, 30*time.Second)
	for _, w := range ws {
		w.stop(t)
	}
	if distinct, dupes := rec.check(t); distinct != n || dupes != 0 {
		t.Fatalf("handled %d distinct messages, %d of them twice; want %d and 0", distinct, dupes, n)
	}
}
