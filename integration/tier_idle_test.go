package integration

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// Empty retry tiers are not fetched: once the worker has started, its
// fetch requests name only the source partitions. A message that fails
// into a tier wakes that tier's partition and is handled from it.
func TestIdleRetryTiersAreNotFetched(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	requireFake(t, b)
	withTiers, sinceTiers := countTierFetches(b, nil)
	var fromTier atomic.Int64
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if m.Topic == b.topic {
			return errors.New("fails on the source topic")
		}
		fromTier.Add(1)
		return nil
	})
	start(t, b.retryConfig(1, 50*time.Millisecond), h)
	testutil.WaitFor(t, 30*time.Second, "fetches without the empty tier partitions", func() bool {
		return sinceTiers.Load() >= 4
	})
	t.Logf("fetches that named a tier partition before they went idle: %d", withTiers.Load())
	if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the failed message handled from its retry tier", func() bool { return fromTier.Load() == 1 })
	b.waitAllCommitted(t, b.topic)
}

// countTierFetches counts, on b's fake broker, the fetch requests that
// name a retry-tier partition (withTiers) and those since the last such
// (sinceTiers). answer, when not nil, may answer a fetch naming a tier
// itself (ok true) instead of the broker.
func countTierFetches(b *testBundle, answer func(*kmsg.FetchRequest) (resp kmsg.Response, ok bool)) (withTiers, sinceTiers *atomic.Int64) {
	withTiers, sinceTiers = new(atomic.Int64), new(atomic.Int64)
	fake := b.cluster.Fake()
	fake.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		req := kreq.(*kmsg.FetchRequest)
		tiers := false
		for _, tp := range req.Topics {
			tiers = tiers || strings.Contains(tp.Topic, ".retry.")
		}
		if !tiers {
			sinceTiers.Add(1)
			return nil, nil, false
		}
		withTiers.Add(1)
		sinceTiers.Store(0)
		if answer != nil {
			if resp, ok := answer(req); ok {
				return resp, nil, true
			}
		}
		return nil, nil, false
	})
	return withTiers, sinceTiers
}
