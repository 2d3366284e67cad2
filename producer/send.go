package producer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// Send sends m and waits for the broker's acknowledgement, returning
// where m was written. It returns a *SendError when the send failed, the
// producer is closed (ErrClosed), or ctx ended first (ctx's error): then
// m may still be written, since a record handed to Kafka cannot be called
// back. The send has a span of its own, a child of ctx's, whose context is
// written into the record's headers (replacing a traceparent m carried;
// m itself is not changed), so the worker that consumes the record
// continues the trace.
func (p *Producer) Send(ctx context.Context, m *Message) (partition int32, offset int64, err error) {
	type result struct {
		partition int32
		offset    int64
		err       error
	}
	done := make(chan result, 1) // the callback never blocks, even after Send gave up
	p.SendAsync(ctx, m, func(partition int32, offset int64, err error) { done <- result{partition, offset, err} })
	select {
	case r := <-done:
		return r.partition, r.offset, r.err
	case <-ctx.Done():
		return -1, -1, &SendError{Topic: m.Topic, Partition: -1, Err: ctx.Err()}
	}
}

// SendAsync hands m to the producer and returns; f is called exactly once
// with the outcome: where m was written, or a *SendError (partition and
// offset are then -1). SendAsync blocks only while the producer's buffers
// are full, and at most until ctx ends; ctx bounds that hand-over only:
// once m is handed over it is sent whatever happens to ctx. The trace
// context is injected into the record's headers as by Send.
//
// f runs on the producer's completion goroutine, which completes every
// send in turn, so it must be quick and must not call Send, SendAsync or
// Close (which wait for that goroutine: until their context ends). When m is
// refused at once (no topic, ctx already done, the producer closed) f is
// called before SendAsync returns, on the caller's goroutine; when Close's
// deadline fails it, on Close's goroutine. A nil f
// ignores the outcome (the metrics and the span still record it).
func (p *Producer) SendAsync(ctx context.Context, m *Message, f func(partition int32, offset int64, err error)) {
	if f == nil {
		f = func(int32, int64, error) {}
	}
	pd := p.begin(ctx, m, f)
	if pd.err != nil {
		pd.finish(p, -1, -1, pd.err)
		return
	}
	if err := p.handOver(ctx, pd); err != nil {
		pd.finish(p, -1, -1, err) // outside mu: f may call Close
	}
}

// handOver gives pd's record to sarama, or returns why it could not: the
// producer is closing, or ctx ended while sarama's buffers were full.
func (p *Producer) handOver(ctx context.Context, pd *pending) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	select {
	case <-p.closing: // Close may have closed sarama's input already
		return ErrClosed
	default:
	}
	p.track(pd)
	select {
	case p.ap.Input() <- pd.msg:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.closing:
		return ErrClosed
	}
}

// pending is one send from SendAsync to its completion. It travels with
// the record as ProducerMessage.Metadata.
type pending struct {
	msg      *sarama.ProducerMessage
	topic    string
	explicit bool // Message.Partition was set
	f        func(int32, int64, error)
	span     trace.Span
	start    time.Time
	err      error // refused before the hand-over
	done     bool  // completed; guarded by Producer.pendMu
}

// begin prepares a send: the span, the trace context in the headers, the
// record; pd.err is set when m is refused at once.
func (p *Producer) begin(ctx context.Context, m *Message, f func(int32, int64, error)) *pending {
	pd := &pending{f: f, start: time.Now()}
	switch {
	case m == nil:
		pd.err = errNoMessage
		return pd
	case m.Topic == "":
		pd.err = errNoTopic
		return pd
	}
	pd.topic, pd.explicit = m.Topic, m.Partition != nil
	select {
	case <-p.closing:
		pd.err = ErrClosed
		return pd
	default:
	}
	if err := ctx.Err(); err != nil {
		pd.err = err
		return pd
	}
	p.refreshTracing()
	pd.msg = saramaMessage(m, pd)
	ctx, pd.span = p.tracing.StartSend(ctx, attr.SendSpanName(m.Topic), func() []attribute.KeyValue {
		return attr.SendSpan(m.Topic, p.clientID, m.Key, len(m.Value))
	})
	if !telemetry.IsNoSpan(pd.span) {
		p.tracing.Inject(ctx, &pd.msg.Headers)
	}
	return pd
}

// refreshTracing reads the otel globals again, at most once a second, so
// a provider installed after New is used.
func (p *Producer) refreshTracing() {
	last := p.traceAt.Load()
	if now := time.Now().UnixNano(); now-last > int64(time.Second) && p.traceAt.CompareAndSwap(last, now) {
		p.tracing.Refresh()
	}
}

// track records pd as handed over, so that Close can fail it past its
// deadline.
func (p *Producer) track(pd *pending) {
	p.pendMu.Lock()
	p.pending[pd] = struct{}{}
	p.pendMu.Unlock()
}

// finish completes pd once: the metrics, the span and the callback. A
// second completion (sarama returning a record Close already failed) is
// ignored: finish says whether this one completed pd.
func (pd *pending) finish(p *Producer, partition int32, offset int64, err error) bool {
	p.pendMu.Lock()
	if pd.done {
		p.pendMu.Unlock()
		return false
	}
	pd.done = true
	delete(p.pending, pd)
	p.pendMu.Unlock()

	took := time.Since(pd.start)
	if err != nil {
		if pd.explicit && partition < 0 && pd.msg != nil {
			partition = pd.msg.Partition
		}
		err = &SendError{Topic: pd.topic, Partition: partition, Err: err}
		partition, offset = -1, -1
		if pd.topic != "" { // a nil message or one without a topic is the caller's error, told by err: no series with topic=""
			p.metrics.Failed(pd.topic, reason(err), took)
		}
	} else {
		p.metrics.Sent(pd.topic, took)
	}
	if pd.span != nil && !telemetry.IsNoSpan(pd.span) {
		if pd.span.IsRecording() {
			if err != nil {
				pd.span.SetAttributes(attr.ErrorTypeSpan(reason(err)))
				pd.span.SetStatus(codes.Error, err.Error())
			} else {
				pd.span.SetAttributes(attr.SentSpan(partition, offset)...)
			}
		}
		pd.span.End()
	}
	pd.f(partition, offset, err)
	return true
}

// complete reads sarama's results and completes each send, until sarama
// has shut down (Close).
func (p *Producer) complete() {
	defer close(p.drained)
	succ, errs := p.ap.Successes(), p.ap.Errors()
	for succ != nil || errs != nil {
		select {
		case m, ok := <-succ:
			if !ok {
				succ = nil
				continue
			}
			if pd, ok := m.Metadata.(*pending); ok {
				pd.finish(p, m.Partition, m.Offset, nil)
			}
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if pd, ok := e.Msg.Metadata.(*pending); ok {
				pd.finish(p, -1, -1, e.Err)
			}
		}
	}
}
