package engine

import (
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// StartOffsets answers sarama's two start-offset questions for a claim
// from what the session's set-up read, once each and only while fresh;
// anything else, a second ask included, goes to the broker. TiersHoldWork
// tells a tier with records past the group's committed offset from one
// without.
func TestStartOffsetsAndTierWork(t *testing.T) {
	cluster, ctx := embeddedBroker(t)
	const topic, group = "orders.g.retry.1", "g"
	if err := cluster.CreateTopic(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Produce(ctx, kafkatest.Record{Topic: topic, Partition: 0, Explicit: true, Value: []byte("v")},
		kafkatest.Record{Topic: topic, Partition: 0, Explicit: true, Value: []byte("w")}); err != nil {
		t.Fatal(err)
	}
	client, err := sarama.NewClient(cluster.Addrs(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	s := NewStartOffsets(client)
	s.set(map[topicPartition]*claimBounds{{topic, 0}: {oldest: 7, newest: 9}}, time.Now())
	ask := func(id int32, which int64, want int64) {
		t.Helper()
		if got, err := s.GetOffset(topic, id, which); err != nil || got != want {
			t.Fatalf("GetOffset(%d, %d) = %d, %v; want %d", id, which, got, err, want)
		}
	}
	ask(0, sarama.OffsetNewest, 9) // from the set-up
	ask(0, sarama.OffsetOldest, 7)
	ask(0, sarama.OffsetNewest, 2) // asked again: the broker
	ask(0, sarama.OffsetOldest, 0)
	ask(1, sarama.OffsetNewest, 0) // not read at set-up
	if o, ok := s.get(topic, 0, sarama.OffsetNewest); !ok || o != 9 {
		t.Fatalf("startClaim's read: %d, %v; want 9 (still fresh)", o, ok)
	}
	s.set(map[topicPartition]*claimBounds{{topic, 1}: {oldest: 5, newest: 5}}, time.Now().Add(-startOffsetsFresh))
	ask(1, sarama.OffsetNewest, 0) // stale: the broker
	if _, ok := s.get(topic, 1, sarama.OffsetOldest); ok {
		t.Fatal("stale offsets given to startClaim")
	}

	work := func(want bool) {
		t.Helper()
		if got, err := TiersHoldWork(client, group, []string{topic}); err != nil || got != want {
			t.Fatalf("TiersHoldWork = %v, %v; want %v", got, err, want)
		}
	}
	work(true) // two records, nothing committed
	commit := func(off int64) {
		t.Helper()
		coord, err := client.Coordinator(group)
		if err != nil {
			t.Fatal(err)
		}
		req := &sarama.OffsetCommitRequest{Version: 2, ConsumerGroup: group, ConsumerGroupGeneration: -1, RetentionTime: -1}
		req.AddBlock(topic, 0, off, 0, "")
		resp, err := coord.CommitOffset(req)
		if err != nil || resp.Errors[topic][0] != sarama.ErrNoError {
			t.Fatalf("commit %d: %v %v", off, err, resp)
		}
	}
	commit(1)
	work(true) // one left
	commit(2)
	work(false)
}
