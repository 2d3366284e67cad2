package kafkatest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadCommitted keeps what a read_committed consumer sees: plain records
// and those of committed transactions, not those of aborted or open ones;
// ReadAll keeps them all and ends on a partition whose last record is a
// transaction marker.
func TestReadCommittedLeavesOutAbortedAndOpenTransactions(t *testing.T) {
	c, err := NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const topic = "txn"
	if err := c.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, Record{Topic: topic, Value: []byte("plain")}); err != nil {
		t.Fatal(err)
	}
	txn := func(id string, values []string, end *kgo.TransactionEndTry) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic))
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if end != nil {
			if err := cl.EndTransaction(ctx, *end); err != nil {
				t.Fatal(err)
			}
		}
		return cl
	}
	commit, abort := kgo.TryCommit, kgo.TryAbort
	txn("a", []string{"committed-1", "committed-2"}, &commit).Close()
	txn("b", []string{"aborted"}, &abort).Close()
	open := txn("c", []string{"open"}, nil)
	defer open.Close()

	got, err := c.ReadCommitted(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, r := range got {
		values = append(values, string(r.Value))
	}
	if want := []string{"plain", "committed-1", "committed-2"}; !slices.Equal(values, want) {
		t.Fatalf("ReadCommitted = %v, want %v", values, want)
	}
	all, err := c.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Fatalf("ReadAll read %d data records, want all 5 (markers left out)", len(all))
	}
}
