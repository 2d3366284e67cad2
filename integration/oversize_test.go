package integration

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The oversize tests run a source topic that accepts records of up to
// 2 MiB, and a record of 1.5 MiB that always fails: larger than sarama's
// default Producer.MaxMessageBytes (1 MiB), than the broker's default
// max.message.bytes (1048588) and than the consumer's Consumer.Fetch.Default
// (1 MiB). The embedded broker enforces max.message.bytes as Kafka does: it
// compares each record batch of a produce request with the topic's
// max.message.bytes (or the broker's message.max.bytes) and answers
// MESSAGE_TOO_LARGE (kfake 00_produce.go), and DescribeConfigs reports a
// topic's own setting as DYNAMIC_TOPIC_CONFIG with the default as its
// synonym, so nothing here needs to skip on it.
const (
	largeTopicLimit = 2 << 20             // max.message.bytes of the source topic
	bigRecordSize   = 1536 << 10          // 1572864 bytes
	smallTopicLimit = 1 << 20             // a forward topic created too small
	limitConfig     = "max.message.bytes" // the topic config
)

// bigValue is a record value of n incompressible bytes, so that a record
// that arrives truncated or altered is noticed.
func bigValue(n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{'k', 'w'}))
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	return v
}

// bigDeliveries records on which topics a handler was given the big value,
// and whether it came whole.
type bigDeliveries struct {
	mu     sync.Mutex
	topics []string
	broken []string
}

func (d *bigDeliveries) add(m *handler.Message, want []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.topics = append(d.topics, m.Topic)
	if !bytes.Equal(m.Value, want) {
		d.broken = append(d.broken, m.Topic+": "+strconv.Itoa(len(m.Value))+" bytes")
	}
}

func (d *bigDeliveries) get() (topics, broken []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.topics...), append([]string(nil), d.broken...)
}

// A failing 1.5 MiB record on a source topic that accepts 2 MiB records is
// consumed whole (larger than Consumer.Fetch.Default), forwarded to retry
// tier 1 and then the dead-letter topic intact, both created with the
// source's max.message.bytes, and the source's committed offset moves past
// it.
func TestOversizeRecordIsRetriedAndDeadLettered(t *testing.T) {
	t.Parallel()
	b := setupWithConfig(t, 1, map[string]string{limitConfig: strconv.Itoa(largeTopicLimit)})
	big := bigValue(bigRecordSize)
	src, err := b.cluster.Produce(ctx(t),
		kafkatest.Record{Topic: b.topic, Key: []byte("big"), Value: big},
		kafkatest.Record{Topic: b.topic, Key: []byte("small"), Value: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	var got bigDeliveries
	var small atomic.Int64
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Key) == "big" {
			got.add(m, big)
			return flakyError{"too big to handle"}
		}
		small.Add(1)
		return nil
	})
	w := start(t, b.retryConfig(1, 200*time.Millisecond), h)

	for _, topic := range []string{b.tierTopic(1), b.dlqTopic()} {
		r := b.waitRecords(t, topic, 1)[0]
		if string(r.Key) != "big" || len(r.Value) != len(big) || !bytes.Equal(r.Value, big) {
			t.Errorf("%s holds key %q with %d bytes, want the original %d bytes", topic, r.Key, len(r.Value), len(big))
		}
		if r.Headers[retry.HeaderOriginalOffset] != strconv.FormatInt(src[0].Offset, 10) {
			t.Errorf("%s record headers %v: not the big record", topic, r.Headers)
		}
		v, err := b.cluster.TopicConfig(ctx(t), topic, limitConfig)
		if err != nil {
			t.Fatal(err)
		}
		if v != strconv.Itoa(largeTopicLimit) {
			t.Errorf("%s was created with %s=%s, want the source's %d", topic, limitConfig, v, largeTopicLimit)
		}
	}
	b.waitAllCommitted(t, b.topic, b.tierTopic(1))
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if com[src[0].Partition] <= src[0].Offset {
		t.Fatalf("committed offset %d, want past the big record at %d", com[src[0].Partition], src[0].Offset)
	}
	w.stop(t)
	if small.Load() != 1 {
		t.Errorf("the record after the big one was handled %d times, want 1", small.Load())
	}

	topics, broken := got.get()
	if want := []string{b.topic, b.tierTopic(1)}; strings.Join(topics, ",") != strings.Join(want, ",") {
		t.Errorf("the big record was delivered from %v, want %v", topics, want)
	}
	if len(broken) > 0 {
		t.Errorf("the handler got the big record altered: %v", broken)
	}
}

// A retry topic that already exists with a smaller max.message.bytes than
// its source is reported at start (naming both topics, both limits and the
// command that fixes it); a failing record larger than its limit is kept,
// uncommitted, and its refused publishes are counted with
// reason="too_large", while other keys keep flowing. Once the limit is
// raised the record goes on, intact.
func TestOversizeRecordKeptWhenForwardTopicIsSmaller(t *testing.T) {
	t.Parallel()
	b := setupWithConfig(t, 1, map[string]string{limitConfig: strconv.Itoa(largeTopicLimit)})
	if err := b.cluster.CreateTopicWithConfig(ctx(t), b.tierTopic(1), 1, map[string]string{limitConfig: strconv.Itoa(smallTopicLimit)}); err != nil {
		t.Fatal(err)
	}
	big := bigValue(bigRecordSize)
	bad, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("big"), Value: big})
	if err != nil {
		t.Fatal(err)
	}
	const others = 50
	b.produceKeyed(t, others, 10)

	rec := newRecorder()
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Key) == "big" {
			return flakyError{"too big to handle"}
		}
		return rec.Handle(ctx, m)
	})
	var logs testutil.Buffer
	reg := prometheus.NewRegistry()
	w := start(t, b.retryConfig(1, 200*time.Millisecond), h, worker.WithLogger(logs.TextLogger()), worker.WithRegisterer(reg))

	tooLarge := func() float64 {
		return counterVal(t, reg, worker.MetricForwardErrors, b.group, b.tierTopic(1), metricdef.ReasonTooLarge)
	}
	testutil.WaitFor(t, 30*time.Second, "other keys handled while the big record cannot be forwarded", func() bool { return rec.handled.Load() == others })
	testutil.WaitFor(t, 30*time.Second, `several refused publishes counted with reason="too_large"`, func() bool { return tooLarge() >= 3 })
	if n := series(t, reg, worker.MetricForwardErrors); n != 1 {
		t.Errorf("%d forward error series, want 1 (%s, too_large)", n, b.tierTopic(1))
	}
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := com[bad[0].Partition]; ok && o > bad[0].Offset {
		t.Fatalf("committed offset %d past the record that cannot be forwarded (offset %d)", o, bad[0].Offset)
	}
	if recs, err := b.cluster.ReadAll(ctx(t), b.tierTopic(1)); err != nil || len(recs) != 0 {
		t.Fatalf("%s holds %d records (%v), want none: the broker must refuse the big record", b.tierTopic(1), len(recs), err)
	}

	text := logs.String()
	warn := lineWith(text, "level=WARN", "accepts smaller records than its source")
	for _, want := range []string{
		"forward_topic=" + b.tierTopic(1), "forward_max_message_bytes=" + strconv.Itoa(smallTopicLimit),
		"source_topic=" + b.topic, "source_max_message_bytes=" + strconv.Itoa(largeTopicLimit),
		"kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name " + b.tierTopic(1) +
			" --add-config max.message.bytes=" + strconv.Itoa(largeTopicLimit),
	} {
		if !strings.Contains(warn, want) {
			t.Errorf("the start-up warning does not say %q:\n%s", want, warn)
		}
	}
	if strings.Contains(text, "entity-name "+b.dlqTopic()) {
		t.Errorf("warned about %s, which the worker created with the source's limit:\n%s", b.dlqTopic(), text)
	}
	fail := lineWith(text, "level=ERROR", "forwarding a failed message failed")
	for _, want := range []string{
		"reason=too_large",
		"record of ", " bytes exceeds the limit of topic " + b.tierTopic(1) + " (max.message.bytes=" + strconv.Itoa(smallTopicLimit) + ")",
		"--add-config max.message.bytes=" + strconv.Itoa(largeTopicLimit),
	} {
		if !strings.Contains(fail, want) {
			t.Errorf("the failed forward's log line does not say %q:\n%s", want, fail)
		}
	}

	// Raised as the warning says, the record goes on, whole.
	if err := b.cluster.SetTopicConfig(ctx(t), b.tierTopic(1), limitConfig, strconv.Itoa(largeTopicLimit)); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{b.tierTopic(1), b.dlqTopic()} {
		r := b.waitRecords(t, topic, 1)[0]
		if !bytes.Equal(r.Value, big) || r.Headers[retry.HeaderOriginalOffset] != strconv.FormatInt(bad[0].Offset, 10) {
			t.Errorf("%s holds %d bytes with headers %v, want the big record intact", topic, len(r.Value), r.Headers)
		}
	}
	b.waitAllCommitted(t, b.topic, b.tierTopic(1))
	w.stop(t)
	if distinct, dupes := rec.check(t); distinct != others || dupes != 0 {
		t.Fatalf("handled %d others with %d duplicates, want %d and 0", distinct, dupes, others)
	}
}

// lineWith returns the first line of text that contains every one of
// parts, or "" (so that the caller's assertion fails, showing the logs).
func lineWith(text string, parts ...string) string {
	for line := range strings.Lines(text) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return line
		}
	}
	return "(no line with " + strings.Join(parts, " and ") + " in the logs)\n" + text
}
