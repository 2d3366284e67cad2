package producer

import (
	"errors"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Message is one record to produce. Its Headers are handler.Headers, as
// on a consumed handler.Message, so a handler can pass headers on as they
// came.
//
// The producer does not copy Key, Value or the header values: do not
// change them until the send has completed.
type Message struct {
	Topic string // required
	// Key picks the partition (see New: murmur2, as Kafka's Java client) and
	// so keeps the records of one key in order; nil means no key, and the
	// partition is picked at random.
	Key []byte
	// Value is the payload; nil is a tombstone (on a compacted topic it
	// deletes the key).
	Value   []byte
	Headers []handler.Header
	// Partition, when not nil, sends the record to that partition instead
	// of the one its key picks: new(int32(3)).
	Partition *int32
	// Timestamp is the record's time; the zero time means now.
	Timestamp time.Time
}

// errNoTopic and errNoMessage are the causes of a send without a topic
// or without a message.
var (
	errNoTopic   = errors.New("message has no Topic: set it")
	errNoMessage = errors.New("message is nil: pass a *Message")
)

// saramaMessage is m as sarama takes it, carrying meta.
func saramaMessage(m *Message, meta *pending) *sarama.ProducerMessage {
	pm := &sarama.ProducerMessage{Topic: m.Topic, Timestamp: m.Timestamp, Metadata: meta}
	if m.Key != nil {
		pm.Key = sarama.ByteEncoder(m.Key)
	}
	if m.Value != nil {
		pm.Value = sarama.ByteEncoder(m.Value)
	}
	if m.Partition != nil {
		pm.Partition = *m.Partition
	}
	if len(m.Headers) > 0 {
		pm.Headers = make([]sarama.RecordHeader, len(m.Headers), len(m.Headers)+1) // room for traceparent
		for i, h := range m.Headers {
			pm.Headers[i] = sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value}
		}
	}
	return pm
}

// explicitFirst wraps the configured partitioner: a message whose
// Partition was set goes there; every other one goes where next says.
type explicitFirst struct{ next sarama.Partitioner }

func withExplicit(next sarama.PartitionerConstructor) sarama.PartitionerConstructor {
	return func(topic string) sarama.Partitioner { return explicitFirst{next: next(topic)} }
}

func (p explicitFirst) Partition(m *sarama.ProducerMessage, numPartitions int32) (int32, error) {
	if pd, ok := m.Metadata.(*pending); ok && pd.explicit {
		return m.Partition, nil // sarama refuses one out of range with ErrInvalidPartition
	}
	return p.next.Partition(m, numPartitions)
}

// RequiresConsistency is true: an explicit partition is one.
func (p explicitFirst) RequiresConsistency() bool { return true }

// MessageRequiresConsistency says, per message, whether its partition
// must not change when the chosen one is unavailable.
func (p explicitFirst) MessageRequiresConsistency(m *sarama.ProducerMessage) bool {
	if pd, ok := m.Metadata.(*pending); ok && pd.explicit {
		return true
	}
	if d, ok := p.next.(sarama.DynamicConsistencyPartitioner); ok {
		return d.MessageRequiresConsistency(m)
	}
	return p.next.RequiresConsistency()
}
