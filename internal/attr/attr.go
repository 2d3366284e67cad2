// Package attr holds every telemetry attribute key the worker writes, span
// attributes and log attributes alike, so the coming rename of the messaging
// semantic conventions is a one-package change. Log attribute keys follow
// the same names.
package attr

import (
	"log/slog"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Log attribute keys, named after the semantic conventions.
const (
	logKeyTopic     = string(semconv.MessagingDestinationNameKey)
	logKeyPartition = string(semconv.MessagingDestinationPartitionIDKey)
	logKeyOffset    = string(semconv.MessagingKafkaOffsetKey)
	logKeyGroup     = string(semconv.MessagingConsumerGroupNameKey)
	logKeyErrorType = string(semconv.ErrorTypeKey)
)

// SpanName is the name of a delivery's span.
func SpanName(topic string) string { return "process " + topic }

// PartitionSpan are the span attributes shared by every delivery of one
// partition.
func PartitionSpan(topic, group string, partition int32) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingConsumerGroupName(group),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))),
	}
}

// MessageSpan are a delivery's own span attributes.
func MessageSpan(offset int64, key []byte) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.MessagingKafkaOffset(int(offset))}
	if key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(key)))
	}
	return attrs
}

// BatchSize is a batch span's message count.
func BatchSize(n int) attribute.KeyValue { return semconv.MessagingBatchMessageCount(n) }

// ErrorTypeSpan is the span attribute of an error's type.
func ErrorTypeSpan(errorType string) attribute.KeyValue {
	return semconv.ErrorTypeKey.String(errorType)
}

// Topic, Partition, Offset, Group and ErrorType are log attributes.
func Topic(topic string) slog.Attr         { return slog.String(logKeyTopic, topic) }
func Partition(partition int32) slog.Attr  { return slog.Int(logKeyPartition, int(partition)) }
func Offset(offset int64) slog.Attr        { return slog.Int64(logKeyOffset, offset) }
func Group(group string) slog.Attr         { return slog.String(logKeyGroup, group) }
func ErrorType(errorType string) slog.Attr { return slog.String(logKeyErrorType, errorType) }

// SendSpanName is the name of a produced message's span.
func SendSpanName(topic string) string { return "send " + topic }

// SendSpan are a produced message's span attributes known when it is
// sent: key nil means no key.
func SendSpan(topic, clientID string, key []byte, bodySize int) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationName("send"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingClientID(clientID),
		semconv.MessagingMessageBodySize(bodySize),
	}
	if key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(key)))
	}
	return attrs
}

// SentSpan are the span attributes of where the broker put a produced
// message.
func SentSpan(partition int32, offset int64) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))),
		semconv.MessagingKafkaOffset(int(offset)),
	}
}
