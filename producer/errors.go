package producer

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// ErrClosed is the cause of a send made after Close began: Send returns it
// (wrapped in a *SendError) and SendAsync passes it to the callback. The
// message was not sent.
var ErrClosed = errors.New("kafkaworker/producer: producer is closed")

// ErrCloseDeadline is the cause of a send still unacknowledged when
// Close's context ended: the producer stopped waiting for the broker. The
// message may or may not have been written; send it again to be sure
// (keyed and idempotent sends of a new producer are not deduplicated
// against the old one).
var ErrCloseDeadline = errors.New("kafkaworker/producer: closed before the broker acknowledged the message")

// SendError is a failed send: the topic, the partition when one was
// chosen (-1 otherwise) and the cause, which errors.Is and errors.As see
// through: ErrClosed, ErrCloseDeadline, the context's error, a
// sarama.KError such as sarama.ErrUnknownTopicOrPartition, or a
// sarama.ConfigurationError for a message larger than
// Producer.MaxMessageBytes.
type SendError struct {
	Topic     string
	Partition int32
	Err       error
}

// Error says where the message was going, why it failed and, where
// something other than retrying fixes it, what to do.
func (e *SendError) Error() string {
	where := e.Topic
	if e.Partition >= 0 {
		where = fmt.Sprintf("%s/%d", e.Topic, e.Partition)
	}
	msg := fmt.Sprintf("kafkaworker/producer: send to %s: %v", where, e.Err)
	if fix := e.fix(); fix != "" {
		msg += ": " + fix
	}
	return msg
}

func (e *SendError) Unwrap() error { return e.Err }

// fix says what to change so that the send can succeed; empty when
// retrying is all there is to do.
func (e *SendError) fix() string {
	switch reason(e.Err) {
	case metricdef.ReasonUnknownTopic:
		return fmt.Sprintf("topic %s does not exist (the producer does not create topics): create it, e.g. kafka-topics.sh --create --topic %s", e.Topic, e.Topic)
	case metricdef.ReasonTooLarge:
		return fmt.Sprintf("the message is larger than Producer.MaxMessageBytes or topic %s's max.message.bytes: send smaller messages, or raise both (WithSaramaConfig for the first)", e.Topic)
	case metricdef.ReasonUnauthorized:
		if errors.Is(e.Err, sarama.ErrClusterAuthorizationFailed) {
			return "the principal lacks IdempotentWrite on the cluster, which the idempotent producer needs from brokers before 2.8: grant it, or turn Producer.Idempotent off through WithSaramaConfig"
		}
		return fmt.Sprintf("the principal lacks Write on topic %s: grant it, e.g. kafka-acls.sh --add --allow-principal User:<name> --operation Write --topic %s", e.Topic, e.Topic)
	}
	return ""
}

// reason is the reason label of a failed send (metricdef.ProducerErrorReasons).
func reason(err error) string {
	switch {
	case errors.Is(err, ErrClosed) || errors.Is(err, ErrCloseDeadline):
		return metricdef.ReasonClosed
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return metricdef.ReasonCanceled
	}
	// The broker's answers are classified as the worker's forwards are.
	return forward.ErrorReason(err)
}

// CloseError is Close's error when its context ended before every
// buffered message was acknowledged: those sends failed with
// ErrCloseDeadline. Err is the context's error.
type CloseError struct {
	Unacknowledged int
	Err            error
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("kafkaworker/producer: Close gave up (%v) with %d message(s) unacknowledged; their sends failed with ErrCloseDeadline: give Close a longer deadline to flush them",
		e.Err, e.Unacknowledged)
}

func (e *CloseError) Unwrap() error { return e.Err }
