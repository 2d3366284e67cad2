// Package handler holds the types a kafkaworker handler is written against:
// the Message it receives, the Handler interface and the HandlerFunc adapter.
//
// The types are our own, not sarama's, so a handler can be unit-tested by
// building a Message literal, without a broker or a Kafka client.
package handler

import (
	"context"
	"time"
)

// Header is one Kafka record header. Keys are not unique: Kafka allows the
// same key several times, and Headers keeps them in record order.
type Header struct {
	Key   string
	Value []byte
}

// Message is one Kafka record as handed to a Handler.
//
// The worker owns the Message until Handle returns; a handler that keeps Key,
// Value or Headers beyond that must copy them.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte // nil when the record has no key
	Value     []byte // nil for a tombstone
	Headers   []Header
	Timestamp time.Time
}

// Header returns the value of the last header named key, and whether it was
// present. The last one wins because a producer that appends a header to
// override an earlier one expects that.
func (m *Message) Header(key string) ([]byte, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == key {
			return m.Headers[i].Value, true
		}
	}
	return nil, false
}

// Handler processes one message.
//
// Returning nil means the message is done: its offset becomes eligible for
// commit once every earlier offset of its partition is done too. Returning an
// error (or panicking) means it is retried; it is never skipped. ctx is
// cancelled when the worker gives up the message (shutdown deadline or
// partition revoked); a handler should return promptly then, and whatever it
// returns is discarded, so the message will be handled again by the next owner.
//
// Handle is called concurrently for different messages and must be safe for
// concurrent use.
type Handler interface {
	Handle(ctx context.Context, msg *Message) error
}

// HandlerFunc adapts an ordinary function to the Handler interface, as
// http.HandlerFunc does for net/http.
type HandlerFunc func(ctx context.Context, msg *Message) error

// Handle calls f(ctx, msg).
func (f HandlerFunc) Handle(ctx context.Context, msg *Message) error {
	return f(ctx, msg)
}
