package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// A retry-tier partition whose claim starts with a record waiting in it
// knows its high watermark at once (sarama reads the newest offset when a
// claim starts). If its fetches then bring nothing for a while (here the
// broker answers them empty and throttled, as it does a consumer over its
// fetch quota; a fetch failing on a leader change looks the same to the
// dispatcher), the partition must not be taken for idle past that record:
// once fetches answer again, the record is handled.
func TestTierRecordHandledAfterEmptyFetches(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	requireFake(t, b)
	tier := b.tierTopic(1)
	if err := b.cluster.CreateTopic(ctx(t), tier, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: tier, Key: []byte("k"), Value: []byte("waiting")}); err != nil {
		t.Fatal(err)
	}

	var starve atomic.Bool // fetches naming the tier are answered empty and throttled
	starve.Store(true)
	tierFetches, sinceTiers := countTierFetches(b, func(req *kmsg.FetchRequest) (kmsg.Response, bool) {
		if !starve.Load() {
			return nil, false
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.Version = req.Version
		resp.ThrottleMillis = 200
		for _, rt := range req.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = 1, 1, 0
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, true
	})

	var fromTier atomic.Int64
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if m.Topic == tier {
			fromTier.Add(1)
		}
		return nil
	})
	start(t, b.retryConfig(1, 50*time.Millisecond), h)

	// The fetches of the tier bring nothing for a while: until the
	// partition stops being fetched (paused as idle), or 15s.
	testutil.WaitFor(t, 30*time.Second, "the tier partition fetched", func() bool { return tierFetches.Load() > 0 })
	until := time.Now().Add(15 * time.Second)
	testutil.WaitFor(t, 20*time.Second, "the tier partition paused, or 15s of empty fetches", func() bool {
		return sinceTiers.Load() >= 4 || time.Now().After(until)
	})
	paused := sinceTiers.Load() >= 4
	starve.Store(false)
	t.Logf("tier partition paused while its record was unread: %v", paused) // allowed, if it wakes for the record
	testutil.WaitFor(t, 30*time.Second, "the record waiting in the tier handled once fetches answer again", func() bool {
		return fromTier.Load() >= 1
	})
}
