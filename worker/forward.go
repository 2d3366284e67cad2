package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/retry"
)

// forwarder publishes messages that failed for good to a retry tier or the
// dead-letter topic, through an idempotent producer that waits for all
// in-sync replicas. The caller marks the message's offset only after
// publish returns nil.
type forwarder struct {
	cfg      Config
	topo     topology
	producer sarama.SyncProducer
	tracing  tracing
}

// newForwarder starts the producer that publishes to the retry and
// dead-letter topics.
func newForwarder(cfg Config, topo topology, base *sarama.Config, tr tracing) (*forwarder, error) {
	pc := *base
	pc.Producer.RequiredAcks = sarama.WaitForAll
	pc.Producer.Idempotent = true
	pc.Net.MaxOpenRequests = 1
	pc.Producer.Return.Successes = true
	pc.Producer.Return.Errors = true
	pc.ClientID = base.ClientID + "-forwarder"
	p, err := sarama.NewSyncProducer(cfg.Brokers, &pc)
	if err != nil {
		return nil, fmt.Errorf("kafkaworker: start the retry/dead-letter producer: %w", err)
	}
	return &forwarder{cfg: cfg, topo: topo, producer: p, tracing: tr}, nil
}

func (f *forwarder) close() error {
	if f == nil {
		return nil
	}
	return f.producer.Close()
}

// destination is where a failed message goes next.
type destination struct {
	topic      string
	notBefore  time.Time // due time on a retry tier; zero for the dead-letter topic
	deadLetter bool
}

// next decides what happens to a message whose delivery just failed with
// err: nil means retry it in place; otherwise the topic to publish it to.
// h is where the message was consumed; local counts its deliveries there.
func (f *forwarder) next(h hop, local int, err error, now time.Time) *destination {
	if f == nil {
		return nil
	}
	permanent := retry.IsPermanent(err)
	if !permanent && local < f.cfg.RetryLocalAttempts {
		return nil
	}
	tiers := f.topo.tiers[h.source]
	if !permanent && h.tier < len(tiers) {
		return &destination{topic: tiers[h.tier], notBefore: now.Add(f.cfg.RetryTopicDelays[h.tier])}
	}
	if dlq := f.topo.dlq[h.source]; dlq != "" {
		return &destination{topic: dlq, deadLetter: true}
	}
	return nil // no dead-letter topic: keep retrying in place, never drop
}

// publish sends msg to dest with its key, value and headers, plus the kw-*
// headers describing where it came from and why it failed.
func (f *forwarder) publish(ctx context.Context, msg *handler.Message, h hop, attempts int, err error, dest *destination, now time.Time) error {
	info, forwarded := retry.ReadInfo(msg.Headers)
	if !forwarded || h.tier == 0 {
		info = retry.Info{
			OriginalTopic: msg.Topic, OriginalPartition: msg.Partition,
			OriginalOffset: msg.Offset, OriginalTimestamp: msg.Timestamp,
		}
	}
	info.Group = f.cfg.GroupID
	info.Attempt = attempts
	info.NotBefore = dest.notBefore
	info.Error = err.Error()
	info.ErrorType = handler.ErrorType(err)
	info.FailedAt = now

	pm := &sarama.ProducerMessage{Topic: dest.topic}
	if msg.Key != nil {
		pm.Key = sarama.ByteEncoder(msg.Key)
	}
	if msg.Value != nil {
		pm.Value = sarama.ByteEncoder(msg.Value)
	}
	for _, hd := range retry.WriteInfo(msg.Headers, info) {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(hd.Key), Value: hd.Value})
	}
	if ctx != nil {
		f.tracing.inject(ctx, &pm.Headers)
	}
	if _, _, err := f.producer.SendMessage(pm); err != nil {
		return fmt.Errorf("publish to %s: %w", dest.topic, err)
	}
	return nil
}
