// Package forward publishes messages that failed for good on their hop to
// the next retry tier or the dead-letter topic, and knows those topics:
// their names (Topology), their existence and size limits (EnsureTopics),
// and what a failed publish means and how to fix it (ErrorReason,
// ErrorFix).
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/retry"
)

// Forwarder publishes messages that failed for good to a retry tier or the
// dead-letter topic, through idempotent producers that wait for all
// in-sync replicas. The caller marks the message's offset only after
// publish returns nil.
type Forwarder struct {
	group     string
	policy    Policy
	principal string                // the worker's, as kafka-acls.sh takes it, for fix hints
	routes    map[string]route      // retry or dead-letter topic -> how to publish to it
	producers []sarama.SyncProducer // each producer of routes once, to close
	version   int                   // record format the producers write (2 from Kafka 0.11), to size records
	tracing   telemetry.Tracing
}

// route is how the forwarder publishes to one retry or dead-letter topic.
type route struct {
	producer    sarama.SyncProducer
	maxBytes    int  // the producer's Producer.MaxMessageBytes
	userSet     bool // maxBytes was set through WithSaramaConfig
	limit       int  // the topic's max.message.bytes; 0 when not known
	sourceLimit int  // its source topic's; 0 when not known
}

// Params are what a Forwarder is made from.
type Params struct {
	Brokers   []string
	Group     string
	Policy    Policy         // where failed messages go
	Principal string         // the worker's principal as kafka-acls.sh takes it, for fix hints
	Base      *sarama.Config // the worker's; each producer copies and adjusts it
	Tracing   telemetry.Tracing
	Limits    Limits // from EnsureTopics
	Log       *slog.Logger
}

// New starts the producers that publish to the retry and
// dead-letter topics: one per distinct Producer.MaxMessageBytes, which
// follows the max.message.bytes of each source topic (never below sarama's
// default) unless WithSaramaConfig set it. sarama's producer refuses a
// record larger than Producer.MaxMessageBytes and batches up to that size
// per partition, so a single producer sized for the largest source would
// batch past the smaller limit of another source's retry topics, and the
// broker would refuse the whole batch.
func New(params Params) (_ *Forwarder, err error) {
	base, topo, limits, log := params.Base, params.Policy.Topology, params.Limits, params.Log
	f := &Forwarder{group: params.Group, policy: params.Policy, principal: params.Principal,
		routes: map[string]route{}, tracing: params.Tracing, version: 1}
	if base.Version.IsAtLeast(sarama.V0_11_0_0) {
		f.version = 2
	}
	defer func() {
		if err != nil {
			_ = f.Close()
		}
	}()
	def := sarama.NewConfig().Producer.MaxMessageBytes
	userSet := base.Producer.MaxMessageBytes != def
	byLimit := map[int]sarama.SyncProducer{}
	largest, largestSource := 0, ""
	need := topo.ForwardTopics()
	for _, src := range sortedKeys(need) {
		maxBytes := base.Producer.MaxMessageBytes
		srcLimit, known := limits[src]
		if known {
			if srcLimit.bytes > largest {
				largest, largestSource = srcLimit.bytes, src
			}
			if !userSet {
				maxBytes = producerLimit(srcLimit.bytes, def)
			}
			if srcLimit.bytes-recordBatchOverhead > maxBytes { // the source holds records the producer refuses
				log.Warn("the forwarder's Producer.MaxMessageBytes is smaller than a source topic's max.message.bytes: a failing record larger than it cannot be forwarded, and its offset stays uncommitted",
					attr.Topic(src), slog.Int("source_max_message_bytes", srcLimit.bytes), slog.Int("producer_max_message_bytes", maxBytes),
					slog.Bool("set_through_WithSaramaConfig", userSet))
			}
		}
		p, ok := byLimit[maxBytes]
		if !ok {
			pc := *base
			pc.Producer.RequiredAcks = sarama.WaitForAll
			pc.Producer.Idempotent = true
			pc.Net.MaxOpenRequests = 1
			pc.Producer.Return.Successes = true
			pc.Producer.Return.Errors = true
			pc.Producer.MaxMessageBytes = maxBytes
			pc.ClientID = base.ClientID + "-forwarder"
			if p, err = sarama.NewSyncProducer(params.Brokers, &pc); err != nil {
				return nil, fmt.Errorf("kafkaworker: start the retry/dead-letter producer: %w", err)
			}
			byLimit[maxBytes] = p
			f.producers = append(f.producers, p)
		}
		for _, name := range need[src] {
			f.routes[name] = route{producer: p, maxBytes: maxBytes, userSet: userSet, limit: limits[name].bytes, sourceLimit: srcLimit.bytes}
		}
	}
	// sarama's consumer skips a record larger than Consumer.Fetch.Max (it
	// reports ErrMessageTooLarge and moves on); with 0, the default, it
	// grows its fetch size until the record fits.
	if fm := int(base.Consumer.Fetch.Max); fm > 0 && largest > fm {
		log.Warn("Consumer.Fetch.Max (set through WithSaramaConfig) is smaller than a source topic's max.message.bytes: sarama skips a record larger than Consumer.Fetch.Max; raise it or leave it 0 (no limit)",
			attr.Topic(largestSource), slog.Int("source_max_message_bytes", largest), slog.Int("consumer_fetch_max", fm))
	}
	return f, nil
}

// producerLimit is the Producer.MaxMessageBytes for a source topic whose
// max.message.bytes is limit: what a record batch may hold there (the
// broker counts the batch's header too), never below sarama's default def,
// and below sarama.MaxRequestSize, which sarama requires. A source on the
// broker's default (1048588) gets sarama's default (1048576), as before.
func producerLimit(limit, def int) int {
	return min(max(limit-recordBatchOverhead, def), int(sarama.MaxRequestSize)-1)
}

func (f *Forwarder) Close() error {
	if f == nil {
		return nil
	}
	var errs []error
	for _, p := range f.producers {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// Destination is where a failed message goes next.
type Destination struct {
	Topic      string
	NotBefore  time.Time // due time on a retry tier; zero for the dead-letter topic
	DeadLetter bool
}

// Next is the forwarder's Policy.Next; a nil Forwarder (nothing is
// forwarded) always retries in place.
func (f *Forwarder) Next(h Hop, local int, err error, now time.Time) *Destination {
	if f == nil {
		return nil
	}
	return f.policy.Next(h, local, err, now)
}

// Policy is where failed messages go: after LocalAttempts deliveries in
// place, to the next of Topology's retry tiers (due Delays[tier] later),
// then to the dead-letter topic.
type Policy struct {
	Topology      Topology
	LocalAttempts int
	Delays        []time.Duration
}

// Next decides what happens to a message whose delivery just failed with
// err: nil means retry it in place; otherwise the topic to publish it to.
// h is where the message was consumed; local counts its deliveries there.
// A permanent error (retry.Permanent) skips the tiers.
func (p Policy) Next(h Hop, local int, err error, now time.Time) *Destination {
	permanent := retry.IsPermanent(err)
	if !permanent && local < p.LocalAttempts {
		return nil
	}
	tiers := p.Topology.tiers[h.Source]
	if !permanent && h.Tier < len(tiers) {
		return &Destination{Topic: tiers[h.Tier], NotBefore: now.Add(p.Delays[h.Tier])}
	}
	if dlq := p.Topology.dlq[h.Source]; dlq != "" {
		return &Destination{Topic: dlq, DeadLetter: true}
	}
	return nil // no dead-letter topic: keep retrying in place, never drop
}

// Publish sends msg to dest with its key, value and headers, plus the kw-*
// headers describing where it came from and why it failed, and returns
// where it was written.
func (f *Forwarder) Publish(ctx context.Context, msg *handler.Message, h Hop, attempts int, err error, dest *Destination, now time.Time) (partition int32, offset int64, _ error) {
	pm := f.Record(ctx, msg, h, attempts, err, dest, now)
	r, ok := f.routes[dest.Topic]
	if !ok {
		return -1, -1, fmt.Errorf("kafkaworker: no producer for %s, which is not a retry or dead-letter topic of this worker", dest.Topic)
	}
	partition, offset, err = r.producer.SendMessage(pm)
	if err != nil {
		return -1, -1, &publishError{topic: dest.Topic, size: pm.ByteSize(f.version), route: r, principal: f.principal, err: err}
	}
	return partition, offset, nil
}

// Record is the record Publish sends: msg with the kw-* headers of its
// failure (see Publish), and ctx's trace context. An exactly-once worker
// puts it in its transaction instead.
func (f *Forwarder) Record(ctx context.Context, msg *handler.Message, h Hop, attempts int, err error, dest *Destination, now time.Time) *sarama.ProducerMessage {
	info, forwarded := retry.ReadInfo(msg.Headers)
	if !forwarded || h.Tier == 0 {
		info = retry.Info{
			OriginalTopic: msg.Topic, OriginalPartition: msg.Partition,
			OriginalOffset: msg.Offset, OriginalTimestamp: msg.Timestamp,
		}
	}
	info.Group = f.group
	info.Attempt = attempts
	info.NotBefore = dest.NotBefore
	info.Error = err.Error()
	info.ErrorType = handler.ErrorType(err)
	info.FailedAt = now

	pm := &sarama.ProducerMessage{Topic: dest.Topic}
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
		f.tracing.Inject(ctx, &pm.Headers)
	}
	return pm
}

// ErrorReason classifies an error of a publish to a retry or
// dead-letter topic into one of metricdef.ForwardErrorReasons.
func ErrorReason(err error) string {
	if producerRefusedSize(err) {
		return metricdef.ReasonTooLarge
	}
	for _, c := range forwardErrorClasses {
		if errors.Is(err, c.err) {
			return c.reason
		}
	}
	return metricdef.ReasonOther
}

// forwardErrorClasses are the broker's answers that retrying a publish
// cannot fix, with their reason.
var forwardErrorClasses = []struct {
	err    error
	reason string
}{
	// MESSAGE_TOO_LARGE: the record batch exceeds the topic's max.message.bytes.
	{sarama.ErrMessageSizeTooLarge, metricdef.ReasonTooLarge},
	// RECORD_LIST_TOO_LARGE: the batch exceeds the topic's segment.bytes.
	{sarama.ErrMessageSetSizeTooLarge, metricdef.ReasonTooLarge},
	// CORRUPT_MESSAGE (sarama's name: ErrInvalidMessage), also what brokers
	// before 2.8 answer for a record without a key on a compacted topic;
	// sarama has retried it already when it reaches the worker.
	{sarama.ErrInvalidMessage, metricdef.ReasonInvalid},
	// INVALID_RECORD: the broker's validation refused the record (from 2.8
	// for a record without a key on a compacted topic).
	{sarama.ErrInvalidRecord, metricdef.ReasonInvalid},
	// INVALID_TIMESTAMP: outside the topic's message.timestamp.difference.max.ms.
	{sarama.ErrInvalidTimestamp, metricdef.ReasonInvalid},
	{sarama.ErrTopicAuthorizationFailed, metricdef.ReasonUnauthorized},
	// IdempotentWrite, which the idempotent producer needs from brokers before 2.8.
	{sarama.ErrClusterAuthorizationFailed, metricdef.ReasonUnauthorized},
	{sarama.ErrUnknownTopicOrPartition, metricdef.ReasonUnknownTopic},
}

// producerRefusedSize reports whether err is sarama's producer refusing,
// before sending, a record larger than its Producer.MaxMessageBytes: a
// ConfigurationError, not a KError.
func producerRefusedSize(err error) bool {
	var ce sarama.ConfigurationError
	return errors.As(err, &ce) && strings.Contains(string(ce), "Producer.MaxMessageBytes")
}

// publishError is a failed publish to a retry or dead-letter topic, with
// what is needed to say how to fix it.
type publishError struct {
	topic     string
	size      int // the record's size as sarama counts it against Producer.MaxMessageBytes
	route     route
	principal string // the worker's, as kafka-acls.sh takes it
	err       error
}

func (e *publishError) Error() string { return fmt.Sprintf("publish to %s: %v", e.topic, e.err) }
func (e *publishError) Unwrap() error { return e.err }

// fix says what to change so that the publish can succeed; empty when
// retrying is all there is to do.
func (e *publishError) fix() string {
	r := e.route
	switch ErrorReason(e.err) {
	case metricdef.ReasonTooLarge:
		if producerRefusedSize(e.err) {
			if r.userSet {
				return fmt.Sprintf("record of %d bytes exceeds Producer.MaxMessageBytes=%d, set through WithSaramaConfig: raise it (and max.message.bytes of topic %s if that is smaller)",
					e.size, r.maxBytes, e.topic)
			}
			return fmt.Sprintf("record of %d bytes exceeds the forwarder's Producer.MaxMessageBytes=%d, which follows its source topic's max.message.bytes (the kw-* headers added on forwarding made the record larger): raise max.message.bytes of the source topic and of topic %s and restart the worker, or set Producer.MaxMessageBytes through WithSaramaConfig",
				e.size, r.maxBytes, e.topic)
		}
		want := max(r.sourceLimit, roundUp(e.size+recordBatchOverhead, 1024))
		switch {
		case errors.Is(e.err, sarama.ErrMessageSetSizeTooLarge):
			return fmt.Sprintf("the batch with the record of %d bytes exceeds segment.bytes of topic %s: raise its segment.bytes above its max.message.bytes", e.size, e.topic)
		case r.limit == 0:
			return fmt.Sprintf("record of %d bytes exceeds the limit of topic %s: raise it with %s", e.size, e.topic, raiseLimitCommand(e.topic, want))
		case e.size+recordBatchOverhead <= r.limit:
			return fmt.Sprintf("record of %d bytes fits the limit of topic %s (max.message.bytes=%d), but the batch it was sent in did not; it is retried, usually in a smaller batch. To avoid it, raise max.message.bytes of %s above the producer's Producer.MaxMessageBytes=%d: %s",
				e.size, e.topic, r.limit, e.topic, r.maxBytes, raiseLimitCommand(e.topic, max(r.maxBytes+recordBatchOverhead, want)))
		default:
			return fmt.Sprintf("record of %d bytes exceeds the limit of topic %s (max.message.bytes=%d): raise it with %s", e.size, e.topic, r.limit, raiseLimitCommand(e.topic, want))
		}
	case metricdef.ReasonInvalid:
		return fmt.Sprintf("the broker refused the record as invalid: check the configuration of topic %s (a compacted topic, cleanup.policy=compact, refuses records without a key; message.timestamp.difference.max.ms refuses timestamps too far from now)", e.topic)
	case metricdef.ReasonUnauthorized:
		who := e.principal
		if who == "" {
			who = "User:<worker>"
		}
		if errors.Is(e.err, sarama.ErrClusterAuthorizationFailed) {
			return fmt.Sprintf("%s lacks IdempotentWrite on the cluster, which the idempotent producer needs from brokers before 2.8 to publish to %s: grant it, e.g. kafka-acls.sh --bootstrap-server <broker> --add --allow-principal %s --operation IdempotentWrite --cluster",
				who, e.topic, who)
		}
		return fmt.Sprintf("%s lacks Write on topic %s: grant it, e.g. kafka-acls.sh --bootstrap-server <broker> --add --allow-principal %s --operation Write --topic %s",
			who, e.topic, who, e.topic)
	case metricdef.ReasonUnknownTopic:
		return fmt.Sprintf("topic %s does not exist (deleted since the worker started?): restart the worker with RETRY_CREATE_TOPICS=true to create it, or create it with as many partitions as its source topic, e.g. kafka-topics.sh --create --topic %s --partitions <n>", e.topic, e.topic)
	}
	return ""
}

// ErrorFix is what to change so that a failed publish can succeed
// (see publishError.fix); empty when retrying is all there is to do.
func ErrorFix(err error) string {
	var pe *publishError
	if errors.As(err, &pe) {
		return pe.fix()
	}
	return ""
}

// recordBatchOverhead is the size of a v2 record batch's header: the broker
// compares max.message.bytes with the whole batch.
const recordBatchOverhead = 61

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// TierDelay is the delay of retry tier n (1-based); 0 for the source.
func (f *Forwarder) TierDelay(n int) time.Duration {
	if f == nil || n < 1 || n > len(f.policy.Delays) {
		return 0
	}
	return f.policy.Delays[n-1]
}
