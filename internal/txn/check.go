package txn

import (
	"fmt"
	"slices"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// Prepare turns a delivery's output records into the producer's messages,
// inject adding the trace context to each one's headers (nil: none), and
// returns why one of them could never be sent, if so: a record to a topic
// or a partition that does not exist, or, as sent, larger than the
// producer's Producer.MaxMessageBytes. Such a record would fail in the
// producer and make the whole transaction abort, with every partition's
// work in it; and the handler, run again, would produce it again into the
// next one, so that nothing would ever commit. Refused here, it fails its
// own message's delivery only, which is retried as a failed send is
// without exactly-once, while the other messages commit. (A record the
// broker refuses for another reason, or that a Producer.Interceptors
// hook set with WithSaramaConfig makes too large, still aborts the
// transaction.)
func (t *Txn) Prepare(recs []outbox.Record, inject func(*[]sarama.RecordHeader)) ([]*sarama.ProducerMessage, error) {
	msgs := make([]*sarama.ProducerMessage, len(recs))
	for i := range recs {
		r := &recs[i]
		pm := saramaMessage(r)
		if inject != nil {
			inject(&pm.Headers)
		}
		if size := pm.ByteSize(t.recordVersion); size > t.maxBytes {
			return nil, fmt.Errorf("output record %d of %d, to %s, is %d bytes with its headers, more than the producer's Producer.MaxMessageBytes (%d): make it smaller, or raise the limit (and the topic's max.message.bytes) with WithSaramaConfig",
				i+1, len(recs), r.Topic, size, t.maxBytes)
		}
		if err := t.checkPartition(r); err != nil {
			return nil, fmt.Errorf("output record %d of %d: %w", i+1, len(recs), err)
		}
		msgs[i] = pm
	}
	return msgs, nil
}

// checkPartition returns why r's topic or partition does not exist, from
// the cluster's metadata, or nil.
func (t *Txn) checkPartition(r *outbox.Record) error {
	if t.partitions == nil {
		return nil
	}
	parts, err := t.partitions(r.Topic)
	if err != nil {
		return fmt.Errorf("topic %s: %w: create it, or produce to an existing topic", r.Topic, err)
	}
	if r.Partition == nil || slices.Contains(parts, *r.Partition) {
		return nil
	}
	if t.refresh != nil && t.refresh(r.Topic) == nil { // added since the metadata was read?
		if parts, err = t.partitions(r.Topic); err == nil && slices.Contains(parts, *r.Partition) {
			return nil
		}
	}
	return fmt.Errorf("topic %s has no partition %d (it has %d)", r.Topic, *r.Partition, len(parts))
}
