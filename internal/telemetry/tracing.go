package telemetry

import (
	"context"
	"reflect"
	"sync/atomic"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/attr"
)

// tracerName identifies the worker's instrumentation scope.
const tracerName = "github.com/kafkaworker/kafkaworker/worker"

// producerTracerName identifies package producer's.
const producerTracerName = "github.com/kafkaworker/kafkaworker/producer"

// Tracing starts one span per delivery and carries the trace context
// through the message headers.
type Tracing struct {
	// cur is nil while there is no real tracer (the otel global before the
	// application installs a provider, or a no-op one): deliveries then skip
	// Tracing entirely, which keeps its cost off the hot path.
	cur *atomic.Pointer[tracerSet]
	// global means the provider and propagator come from the otel globals,
	// which refresh reads again, so a provider installed after New is used.
	global bool
	tp     trace.TracerProvider
	prop   propagation.TextMapPropagator
	scope  string // the instrumentation scope: the worker's or the producer's
}

type tracerSet struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// NewTracing uses tp and prop; nil means the otel globals.
func NewTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) Tracing {
	return newTracing(tracerName, tp, prop)
}

// NewProducerTracing is NewTracing for package producer, whose spans
// carry its own instrumentation scope.
func NewProducerTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) Tracing {
	return newTracing(producerTracerName, tp, prop)
}

func newTracing(scope string, tp trace.TracerProvider, prop propagation.TextMapPropagator) Tracing {
	tr := Tracing{cur: new(atomic.Pointer[tracerSet]), global: tp == nil, tp: tp, prop: prop, scope: scope}
	tr.Refresh()
	return tr
}

// Refresh decides whether to trace, reading the otel globals again when the
// worker uses them.
func (tr Tracing) Refresh() {
	tp, prop := tr.tp, tr.prop
	if tr.global {
		tp = otel.GetTracerProvider()
	}
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	if isNoopProvider(tp) {
		tr.cur.Store(nil)
		return
	}
	tr.cur.Store(&tracerSet{tracer: tp.Tracer(tr.scope), prop: prop})
}

// isNoopProvider reports whether tp makes no spans: the no-op provider, or
// the otel global before the application sets one.
func isNoopProvider(tp trace.TracerProvider) bool {
	if _, ok := tp.(noop.TracerProvider); ok {
		return true
	}
	return reflect.TypeOf(tp).String() == "*global.tracerProvider"
}

// Start begins the span of one delivery: named "process <topic>", kind
// CONSUMER, with the context the producer injected (traceparent) as its
// parent and also as a link. The attributes are built only when the span
// records, so a no-op tracer costs next to nothing.
func (tr Tracing) Start(ctx context.Context, msg *handler.Message, static []attribute.KeyValue) (context.Context, trace.Span) {
	cur := tr.cur.Load()
	if cur == nil {
		return ctx, noSpan
	}
	return cur.startMessage(cur.prop.Extract(ctx, messageCarrier{msg}), msg, static, true)
}

// StartBatch begins the span of one batch delivery: named "process
// <topic>", kind CONSUMER, with messaging.batch.message_count and a link to
// each message's producer context (traceparent), as the messaging
// conventions have a batch span. Its messages' spans (StartInBatch) are its
// children.
func (tr Tracing) StartBatch(ctx context.Context, msgs []*handler.Message, static []attribute.KeyValue) (context.Context, trace.Span) {
	cur := tr.cur.Load()
	if cur == nil || len(msgs) == 0 {
		return ctx, noSpan
	}
	ctx, span := cur.tracer.Start(ctx, attr.SpanName(msgs[0].Topic), trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(static...)
		span.SetAttributes(attr.BatchSize(len(msgs)))
		for _, msg := range msgs {
			if sc := cur.producerContext(msg); sc.IsValid() {
				span.AddLink(trace.Link{SpanContext: sc})
			}
		}
	}
	return ctx, span
}

// StartInBatch begins the span of one message of a batch: a child of the
// batch's span (ctx, from StartBatch), linked to the message's producer
// context, carrying the message's own attributes; it ends with the
// message's own result.
func (tr Tracing) StartInBatch(ctx context.Context, msg *handler.Message, static []attribute.KeyValue) (context.Context, trace.Span) {
	cur := tr.cur.Load()
	if cur == nil {
		return ctx, noSpan
	}
	return cur.startMessage(ctx, msg, static, false)
}

// startMessage begins a message's span under parent, with the message's
// attributes and a link to its producer's context: parent's own span
// context when linkParent (parent was extracted from the message), else
// the one the message carries.
func (cur *tracerSet) startMessage(parent context.Context, msg *handler.Message, static []attribute.KeyValue, linkParent bool) (context.Context, trace.Span) {
	ctx, span := cur.tracer.Start(parent, attr.SpanName(msg.Topic), trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(static...)
		span.SetAttributes(attr.MessageSpan(msg.Offset, msg.Key)...)
		sc := trace.SpanContextFromContext(parent)
		if !linkParent {
			sc = cur.producerContext(msg)
		}
		if sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc})
		}
	}
	return ctx, span
}

// producerContext is the span context msg's producer injected
// (traceparent); not valid when it carries none.
func (cur *tracerSet) producerContext(msg *handler.Message) trace.SpanContext {
	return trace.SpanContextFromContext(cur.prop.Extract(context.Background(), messageCarrier{msg}))
}

// StartSend begins the span of one produced message: named name, kind
// PRODUCER, a child of ctx's span. attrs is called only when the span
// records. While Tracing is off it returns ctx and a span End ignores.
func (tr Tracing) StartSend(ctx context.Context, name string, attrs func() []attribute.KeyValue) (context.Context, trace.Span) {
	cur := tr.cur.Load()
	if cur == nil {
		return ctx, noSpan
	}
	ctx, span := cur.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(attrs()...)
	}
	return ctx, span
}

// IsNoSpan says whether span stands for no span: Tracing was off.
func IsNoSpan(span trace.Span) bool { return span == noSpan }

// noSpan stands for a delivery's span while Tracing is off.
var noSpan = trace.SpanFromContext(context.Background())

// End closes a delivery's span, marking it failed with the error's type.
func (Tracing) End(span trace.Span, err error) {
	if span == noSpan {
		return
	}
	if err != nil && span.IsRecording() {
		span.SetAttributes(attr.ErrorTypeSpan(handler.ErrorType(err)))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Inject writes ctx's trace context into outgoing headers, replacing what
// the message carried, so the next delivery's span is this one's child.
func (tr Tracing) Inject(ctx context.Context, headers *[]sarama.RecordHeader) {
	cur := tr.cur.Load()
	if cur == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return // not traced: the forwarded record keeps the traceparent it came with
	}
	cur.prop.Inject(ctx, producerCarrier{headers})
}

// messageCarrier reads trace headers from a consumed message.
type messageCarrier struct{ msg *handler.Message }

func (c messageCarrier) Get(key string) string {
	v, _ := c.msg.Header(key)
	return string(v)
}
func (c messageCarrier) Set(string, string) {} // consumed messages are not modified
func (c messageCarrier) Keys() []string {
	keys := make([]string, len(c.msg.Headers))
	for i, h := range c.msg.Headers {
		keys[i] = h.Key
	}
	return keys
}

// producerCarrier writes trace headers into a message being forwarded.
type producerCarrier struct{ headers *[]sarama.RecordHeader }

func (c producerCarrier) Get(key string) string {
	for _, h := range *c.headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

func (c producerCarrier) Set(key, value string) {
	hs := (*c.headers)[:0]
	for _, h := range *c.headers {
		if string(h.Key) != key {
			hs = append(hs, h)
		}
	}
	*c.headers = append(hs, sarama.RecordHeader{Key: []byte(key), Value: []byte(value)})
}

func (c producerCarrier) Keys() []string {
	keys := make([]string, len(*c.headers))
	for i, h := range *c.headers {
		keys[i] = string(h.Key)
	}
	return keys
}
