package txn

import (
	"fmt"
	"slices"

	"github.com/kafkaworker/kafkaworker/internal/outbox"
)

// Check returns why a delivery's output records cannot go into the
// transaction, or nil. A record to a topic or a partition that does not
// exist, or larger than the producer's Producer.MaxMessageBytes, would fail
// in the producer and make the whole transaction abort, with every
// partition's work in it; and the handler, run again, would produce it
// again into the next one, so that nothing ever commits. Refused here, it
// fails its own message's delivery only, which is retried as a failed send
// is without exactly-once, while the other messages commit. (A record the
// broker refuses for another reason still aborts the transaction.)
func (t *Txn) Check(recs []outbox.Record) error {
	for i := range recs {
		r := &recs[i]
		if size := saramaMessage(r).ByteSize(t.recordVersion); size > t.maxBytes {
			return fmt.Errorf("output record %d of %d, to %s, is %d bytes, more than the producer's Producer.MaxMessageBytes (%d): make it smaller, or raise the limit (and the topic's max.message.bytes) with WithSaramaConfig",
				i+1, len(recs), r.Topic, size, t.maxBytes)
		}
		if t.partitions == nil {
			continue
		}
		parts, err := t.partitions(r.Topic)
		if err != nil {
			return fmt.Errorf("output record %d of %d: topic %s: %w: create it, or produce to an existing topic", i+1, len(recs), r.Topic, err)
		}
		if r.Partition != nil && !slices.Contains(parts, *r.Partition) {
			return fmt.Errorf("output record %d of %d: topic %s has no partition %d (it has %d)", i+1, len(recs), r.Topic, *r.Partition, len(parts))
		}
	}
	return nil
}
