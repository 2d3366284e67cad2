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

// explicitFirst sends a record whose partition was chosen there, and any
// other where next says.
type explicitFirst struct{ next sarama.Partitioner }

func withExplicit(next sarama.PartitionerConstructor) sarama.PartitionerConstructor {
	return func(topic string) sarama.Partitioner { return explicitFirst{next: next(topic)} }
}

func (p explicitFirst) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	if o, ok := m.Metadata.(*output); ok && o.explicit {
		return m.Partition, nil
	}
	return p.next.Partition(m, n)
}

func (p explicitFirst) RequiresConsistency() bool { return true }
