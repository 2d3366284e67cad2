package txn

import (
	"errors"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// Prepare refuses, naming the record and the fix, output that would make
// the transaction abort: an unknown topic, a partition the topic does not
// have, a record over Producer.MaxMessageBytes; it passes the rest.
func TestPrepareRefusesOutputThatCannotBeSent(t *testing.T) {
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
		msgs, err := tx.Prepare(c.recs, nil)
		if err == nil && len(msgs) != len(c.recs) {
			t.Errorf("%s: %d messages for %d records", c.name, len(msgs), len(c.recs))
		}
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
	if _, err := tx.Prepare([]outbox.Record{{Topic: "nope"}}, nil); !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		t.Errorf("unknown topic: %v, want it to wrap the metadata error", err)
	}
}

// A record is measured as it will be sent, with the trace context the
// engine injects into its headers: one that fits only without them is
// refused, as sarama would refuse it (aborting the transaction); one at
// the limit with them passes, carrying them.
func TestPrepareMeasuresTheInjectedHeaders(t *testing.T) {
	const maxBytes = 1000
	tx := &Txn{recordVersion: 2, maxBytes: maxBytes}
	inject := func(h *[]sarama.RecordHeader) { // as W3C tracecontext does for a sampled span
		*h = append(*h, sarama.RecordHeader{Key: []byte("traceparent"), Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")})
	}
	bare := saramaMessage(&outbox.Record{Topic: "out"})
	inject(&bare.Headers)
	withHeaders := bare.ByteSize(2)
	atLimit := outbox.Record{Topic: "out", Value: make([]byte, maxBytes-withHeaders)}
	msgs, err := tx.Prepare([]outbox.Record{atLimit}, inject)
	if err != nil {
		t.Fatalf("a record at the limit with its trace header refused: %v", err)
	}
	if len(msgs[0].Headers) != 1 || msgs[0].ByteSize(2) != maxBytes {
		t.Fatalf("prepared message: %d headers, %d bytes; want the trace header and %d bytes", len(msgs[0].Headers), msgs[0].ByteSize(2), maxBytes)
	}
	over := outbox.Record{Topic: "out", Value: make([]byte, maxBytes-withHeaders+1)}
	if _, err := tx.Prepare([]outbox.Record{over}, nil); err != nil {
		t.Fatalf("without headers it fits: %v", err)
	}
	if _, err := tx.Prepare([]outbox.Record{over}, inject); err == nil || !strings.Contains(err.Error(), "with its headers") {
		t.Fatalf("a record over the limit once its trace header is in: %v, want refused", err)
	}
}

// A partition the metadata read so far does not list is looked for once
// more after a refresh (it may have been added since); it passes when the
// refresh finds it.
func TestPrepareRefreshesForAnUnknownPartition(t *testing.T) {
	parts, refreshes := []int32{0}, 0
	tx := &Txn{recordVersion: 2, maxBytes: 1000,
		partitions: func(string) ([]int32, error) { return parts, nil },
		refresh:    func(...string) error { refreshes++; parts = []int32{0, 1}; return nil }}
	p1 := int32(1)
	if _, err := tx.Prepare([]outbox.Record{{Topic: "out", Partition: &p1}}, nil); err != nil || refreshes != 1 {
		t.Fatalf("partition 1, added since: %v after %d refreshes, want nil after 1", err, refreshes)
	}
	p5 := int32(5)
	if _, err := tx.Prepare([]outbox.Record{{Topic: "out", Partition: &p5}}, nil); err == nil || refreshes != 2 {
		t.Fatalf("partition 5: %v after %d refreshes, want refused after one more", err, refreshes)
	}
}
