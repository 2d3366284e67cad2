package engine

import (
	"log/slog"
	"testing"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// The watch wakes an idle tier partition when a record lands in it (its
// check reads the end offset from the broker), at once when this worker
// forwarded the record, and leaves an empty one idle.
func TestTierWatchWakesOnRecords(t *testing.T) {
	cluster, ctx := embeddedBroker(t)
	const topic = "orders.g.retry.1"
	if err := cluster.CreateTopic(ctx, topic, 3); err != nil {
		t.Fatal(err)
	}
	client, err := sarama.NewClient(cluster.Addrs(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	w := NewTierWatch(client, slog.New(slog.DiscardHandler))

	empty := w.Idle(topic, 2, 0)
	w.check()
	select {
	case <-empty.wake:
		t.Fatal("an empty partition was woken")
	default:
	}

	landed := w.Idle(topic, 0, 0)
	if _, err := cluster.Produce(ctx, kafkatest.Record{Topic: topic, Partition: 0, Explicit: true, Value: []byte("v")},
		kafkatest.Record{Topic: topic, Partition: 0, Explicit: true, Value: []byte("w")}); err != nil {
		t.Fatal(err)
	}
	w.check()
	select {
	case <-landed.wake:
		if landed.until != 2 {
			t.Fatalf("woken to read until %d, want the end offset 2", landed.until)
		}
	default:
		t.Fatal("a partition that received records was not woken by the check")
	}

	forwarded := w.Idle(topic, 1, 0)
	w.Forwarded(topic, 1, 4)
	select {
	case <-forwarded.wake:
		if forwarded.until != 5 {
			t.Fatalf("woken to read until %d, want 5 (the forwarded record's offset + 1)", forwarded.until)
		}
	default:
		t.Fatal("a partition this worker forwarded to was not woken at once")
	}
	w.Forwarded(topic, 1, 5) // not idle any more: nothing to wake, no panic
	w.Forget(topic, 2)
	w.check() // nothing idle: no request
}
