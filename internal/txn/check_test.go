package txn

import (
	"errors"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// Check refuses, naming the record and the fix, output that would make
// the transaction abort: an unknown topic, a partition the topic does not
// have, a record over Producer.MaxMessageBytes; it passes the rest.
func TestCheckRefusesOutputThatCannotBeSent(t *testing.T) {
	tx := &Txn{recordVersion: 2, maxBytes: 200, partitions: func(topic string) ([]int32, error) {
		if topic == "out" {
			return []int32{0, 1}, nil
		}
		return nil, sarama.ErrUnknownTopicOrPartition
	}}
	p := func(n int32) *int32 { return &n }
	for _, c := range []struct {
		name string
		recs []outbox.Record
		want []string // in the error; none: nil
	}{
		{"fine", []outbox.Record{{Topic: "out", Value: []byte("v")}, {Topic: "out", Partition: p(1)}}, nil},
		{"unknown topic", []outbox.Record{{Topic: "out"}, {Topic: "nope"}}, []string{"record 2 of 2", "topic nope", "create it"}},
		{"no such partition", []outbox.Record{{Topic: "out", Partition: p(2)}}, []string{"no partition 2", "it has 2"}},
		{"too large", []outbox.Record{{Topic: "out", Value: make([]byte, 300)}}, []string{"MaxMessageBytes (200)", "make it smaller"}},
	} {
		err := tx.Check(c.recs)
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: %v, want nil", c.name, err)
		case c.want != nil && err == nil:
			t.Errorf("%s: nil, want an error", c.name)
		}
		for _, w := range c.want {
			if err != nil && !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
	}
	if err := tx.Check([]outbox.Record{{Topic: "nope"}}); !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		t.Errorf("unknown topic: %v, want it to wrap the metadata error", err)
	}
}
