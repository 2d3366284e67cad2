package kconn

import "github.com/IBM/sarama"

// ExplicitFirst wraps the partitioner next: a message for which explicit
// reports true goes to the partition it names (sarama refuses one out of
// range with ErrInvalidPartition), every other one where next says. The
// producer and the exactly-once worker's transactional producer use it
// for messages whose sender chose the partition.
func ExplicitFirst(next sarama.PartitionerConstructor, explicit func(*sarama.ProducerMessage) bool) sarama.PartitionerConstructor {
	return func(topic string) sarama.Partitioner { return explicitFirst{next: next(topic), explicit: explicit} }
}

type explicitFirst struct {
	next     sarama.Partitioner
	explicit func(*sarama.ProducerMessage) bool
}

func (p explicitFirst) Partition(m *sarama.ProducerMessage, numPartitions int32) (int32, error) {
	if p.explicit(m) {
		return m.Partition, nil
	}
	return p.next.Partition(m, numPartitions)
}

// RequiresConsistency is true: an explicit partition is one.
func (p explicitFirst) RequiresConsistency() bool { return true }

// MessageRequiresConsistency says, per message, whether its partition
// must not change when the chosen one is unavailable.
func (p explicitFirst) MessageRequiresConsistency(m *sarama.ProducerMessage) bool {
	if p.explicit(m) {
		return true
	}
	if d, ok := p.next.(sarama.DynamicConsistencyPartitioner); ok {
		return d.MessageRequiresConsistency(m)
	}
	return p.next.RequiresConsistency()
}
