package kafkatest_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClusterRoundTrip(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Addrs()) != 1 || c.Fake() == nil {
		t.Fatalf("want one embedded broker, got %v", c.Addrs())
	}
	if err := c.CreateTopic(ctx, "t", 3); err != nil {
		t.Fatal(err)
	}
	got, err := c.Produce(ctx,
		kafkatest.Record{Topic: "t", Key: []byte("k"), Value: []byte("1")},
		kafkatest.Record{Topic: "t", Key: []byte("k"), Value: []byte("2")},
		kafkatest.Record{Topic: "t", Explicit: true, Partition: 2, Value: []byte("x")},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Partition != got[1].Partition || got[1].Offset != got[0].Offset+1 {
		t.Fatalf("same key must land in one partition, in order: %+v", got)
	}
	if got[2].Partition != 2 {
		t.Fatalf("explicit partition ignored: %+v", got[2])
	}
	end, err := c.EndOffsets(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, o := range end {
		total += o
	}
	if total != 3 || len(end) != 3 {
		t.Fatalf("end offsets %v, want 3 partitions holding 3 records", end)
	}
	com, err := c.CommittedOffsets(ctx, "nobody", "t")
	if err != nil || len(com) != 0 {
		t.Fatalf("a group that never committed: %v, %v", com, err)
	}
	if err := c.SetPartitions(ctx, "t", 5); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, kafkatest.Record{Topic: "t", Explicit: true, Partition: 4, Value: []byte("new")}); err != nil {
		t.Fatalf("producing to a partition added at runtime: %v", err)
	}
	if err := c.CreateTopic(ctx, "t", 1); err == nil {
		t.Fatal("creating an existing topic must fail")
	}
}

func TestNewClusterRejectsZeroBrokers(t *testing.T) {
	t.Parallel()
	if _, err := kafkatest.NewCluster(kafkatest.WithBrokers(0)); err == nil {
		t.Fatal("WithBrokers(0) must be an error")
	}
}
