package txn

import (
	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// explicit marks a record whose partition the handler chose.
type explicit struct{}

// saramaMessage is r as sarama takes it.
func saramaMessage(r *outbox.Record) *sarama.ProducerMessage {
	pm := &sarama.ProducerMessage{Topic: r.Topic, Timestamp: r.Timestamp}
	if r.Key != nil {
		pm.Key = sarama.ByteEncoder(r.Key)
	}
	if r.Value != nil {
		pm.Value = sarama.ByteEncoder(r.Value)
	}
	if r.Partition != nil {
		pm.Partition, pm.Metadata = *r.Partition, explicit{}
	}
	for _, h := range r.Headers {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	return pm
}

// explicitFirst sends a record whose partition was chosen there, and any
// other where next says.
type explicitFirst struct{ next sarama.Partitioner }

func withExplicit(next sarama.PartitionerConstructor) sarama.PartitionerConstructor {
	return func(topic string) sarama.Partitioner { return explicitFirst{next: next(topic)} }
}

func (p explicitFirst) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	if _, ok := m.Metadata.(explicit); ok {
		return m.Partition, nil
	}
	return p.next.Partition(m, n)
}

func (p explicitFirst) RequiresConsistency() bool { return true }
