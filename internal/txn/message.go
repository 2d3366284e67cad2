package txn

import (
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// output marks a handler's output record: when it was sent, for the
// producer metrics, and whether the handler chose its partition.
type output struct {
	sent     time.Time
	explicit bool
}

// saramaMessage is r as sarama takes it.
func saramaMessage(r *outbox.Record) *sarama.ProducerMessage {
	pm := &sarama.ProducerMessage{Topic: r.Topic, Timestamp: r.Timestamp}
	meta := &output{sent: time.Now()}
	pm.Metadata = meta
	if r.Key != nil {
		pm.Key = sarama.ByteEncoder(r.Key)
	}
	if r.Value != nil {
		pm.Value = sarama.ByteEncoder(r.Value)
	}
	if r.Partition != nil {
		pm.Partition, meta.explicit = *r.Partition, true
	}
	for _, h := range r.Headers {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	return pm
}

// explicitPartition reports whether the handler chose m's partition.
func explicitPartition(m *sarama.ProducerMessage) bool {
	o, ok := m.Metadata.(*output)
	return ok && o.explicit
}
