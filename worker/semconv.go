package worker

// Every telemetry attribute key the worker writes lives in this file, so the
// coming rename of the messaging semantic conventions is a one-file change.
// Log attribute keys follow the same names.

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

// spanName is the name of a delivery's span.
func spanName(topic string) string { return "process " + topic }

// partitionAttrs are the span attributes shared by every delivery of one
// partition.
func partitionAttrs(topic, group string, partition int32) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingConsumerGroupName(group),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))),
	}
}

// messageAttrs are a delivery's own span attributes.
func messageAttrs(offset int64, key []byte) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.MessagingKafkaOffset(int(offset))}
	if key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(key)))
	}
	return attrs
}

func errorTypeAttr(errorType string) attribute.KeyValue {
	return semconv.ErrorTypeKey.String(errorType)
}

func logTopic(topic string) slog.Attr         { return slog.String(logKeyTopic, topic) }
func logPartition(partition int32) slog.Attr  { return slog.Int(logKeyPartition, int(partition)) }
func logOffset(offset int64) slog.Attr        { return slog.Int64(logKeyOffset, offset) }
func logGroup(group string) slog.Attr         { return slog.String(logKeyGroup, group) }
func logErrorType(errorType string) slog.Attr { return slog.String(logKeyErrorType, errorType) }
