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

// explicitPartition reports whether m's sender chose its partition.
func explicitPartition(m *sarama.ProducerMessage) bool {
	pd, ok := m.Metadata.(*pending)
	return ok && pd.explicit
}
