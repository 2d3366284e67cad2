package forward

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// Every publish error gets one of a few fixed reasons, wrapped or not; only
// what retrying cannot fix gets more than "other".
func TestForwardErrorReason(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, metricdef.ReasonOther},
		{"MESSAGE_TOO_LARGE", sarama.ErrMessageSizeTooLarge, metricdef.ReasonTooLarge},
		{"RECORD_LIST_TOO_LARGE", sarama.ErrMessageSetSizeTooLarge, metricdef.ReasonTooLarge},
		{"producer's own limit", sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes: 2000 > 1000"), metricdef.ReasonTooLarge},
		{"wrapped by publish", &publishError{topic: "t.retry.1", err: sarama.ErrMessageSizeTooLarge}, metricdef.ReasonTooLarge},
		{"wrapped with %w", fmt.Errorf("publish to t: %w", sarama.ErrMessageSizeTooLarge), metricdef.ReasonTooLarge},
		{"in a sarama.ProducerError", sarama.ProducerError{Msg: &sarama.ProducerMessage{Topic: "t"}, Err: sarama.ErrMessageSizeTooLarge}, metricdef.ReasonTooLarge},
		{"CORRUPT_MESSAGE", sarama.ErrInvalidMessage, metricdef.ReasonInvalid},
		{"INVALID_RECORD", sarama.ErrInvalidRecord, metricdef.ReasonInvalid},
		{"INVALID_TIMESTAMP", sarama.ErrInvalidTimestamp, metricdef.ReasonInvalid},
		{"TOPIC_AUTHORIZATION_FAILED", sarama.ErrTopicAuthorizationFailed, metricdef.ReasonUnauthorized},
		{"CLUSTER_AUTHORIZATION_FAILED", sarama.ErrClusterAuthorizationFailed, metricdef.ReasonUnauthorized},
		{"joined", errors.Join(errors.New("first"), sarama.ErrTopicAuthorizationFailed), metricdef.ReasonUnauthorized},
		{"UNKNOWN_TOPIC_OR_PARTITION", sarama.ErrUnknownTopicOrPartition, metricdef.ReasonUnknownTopic},
		// Retriable, or not about the record: other.
		{"NOT_ENOUGH_REPLICAS", sarama.ErrNotEnoughReplicas, metricdef.ReasonOther},
		{"NOT_LEADER", sarama.ErrNotLeaderForPartition, metricdef.ReasonOther},
		{"out of brokers", sarama.ErrOutOfBrokers, metricdef.ReasonOther},
		{"another configuration error", sarama.ConfigurationError("Producing headers requires Kafka at least v0.11"), metricdef.ReasonOther},
		// sarama's ErrMessageTooLarge is the consumer's (Consumer.Fetch.Max);
		// a producer never returns it.
		{"consumer's ErrMessageTooLarge", sarama.ErrMessageTooLarge, metricdef.ReasonOther},
		{"plain error", errors.New("message too large"), metricdef.ReasonOther},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := ErrorReason(c.err)
			if got != c.want {
				t.Errorf("ErrorReason(%v) = %q, want %q", c.err, got, c.want)
			}
			if !slices.Contains(metricdef.ForwardErrorReasons(), got) {
				t.Errorf("%q is not in ForwardErrorReasons %v", got, metricdef.ForwardErrorReasons())
			}
		})
	}

	// The producer's refusal is a ConfigurationError recognised by its
	// text: this pins that text to the sarama in go.mod.
	t.Run("sarama's producer refusing a record over Producer.MaxMessageBytes", func(t *testing.T) {
		t.Parallel()
		broker := sarama.NewMockBroker(t, 1)
		defer broker.Close()
		broker.SetHandlerByMap(map[string]sarama.MockResponse{
			"MetadataRequest": sarama.NewMockMetadataResponse(t).
				SetBroker(broker.Addr(), broker.BrokerID()).
				SetLeader("t", 0, broker.BrokerID()),
		})
		cfg := sarama.NewConfig()
		cfg.Producer.Return.Successes = true
		cfg.Producer.MaxMessageBytes = 1000
		cfg.ApiVersionsRequest = false // the mock broker does not answer it as sarama's default version wants
		p, err := sarama.NewSyncProducer([]string{broker.Addr()}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		_, _, err = p.SendMessage(&sarama.ProducerMessage{Topic: "t", Value: sarama.ByteEncoder(make([]byte, 2000))})
		if got := ErrorReason(err); got != metricdef.ReasonTooLarge {
			t.Fatalf("sarama's refusal %v (%T) classified %q, want %q", err, err, got, metricdef.ReasonTooLarge)
		}
	})
}

// The fix logged with a failed publish names the topic, the sizes and the
// command or setting to change.
func TestForwardErrorFix(t *testing.T) {
	t.Parallel()
	const topic = "orders.g.retry.1"
	r := route{maxBytes: 2097152 - recordBatchOverhead, limit: 1048576, sourceLimit: 2097152}
	for _, c := range []struct {
		name string
		err  *publishError
		want []string
	}{
		{"the broker refused a record over the topic's limit",
			&publishError{topic: topic, size: 1572900, route: r, err: sarama.ErrMessageSizeTooLarge},
			[]string{"record of 1572900 bytes exceeds the limit of topic " + topic + " (max.message.bytes=1048576)",
				"kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name " + topic + " --add-config max.message.bytes=2097152"}},
		{"the record fits, its batch did not",
			&publishError{topic: topic, size: 1000, route: r, err: sarama.ErrMessageSizeTooLarge},
			[]string{"fits the limit", "max.message.bytes=2097152"}},
		{"the topic's limit is unknown, the record is larger than its source's",
			&publishError{topic: topic, size: 3_000_000, route: route{maxBytes: 4 << 20}, err: sarama.ErrMessageSizeTooLarge},
			[]string{"exceeds the limit of topic " + topic, "max.message.bytes=3000320"}},
		{"the producer refused it, limit set by the user",
			&publishError{topic: topic, size: 5000, route: route{maxBytes: 4000, userSet: true}, err: sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes: 5000 > 4000")},
			[]string{"Producer.MaxMessageBytes=4000, set through WithSaramaConfig"}},
		{"the producer refused it, limit following the source",
			&publishError{topic: topic, size: 2097200, route: r, err: sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes: 2097200 > 2097091")},
			[]string{"Producer.MaxMessageBytes=2097091, which follows its source topic's max.message.bytes"}},
		{"unauthorized", &publishError{topic: topic, principal: "User:svc", err: sarama.ErrTopicAuthorizationFailed}, []string{"User:svc lacks Write on topic " + topic, "kafka-acls.sh", "--allow-principal User:svc --operation Write --topic " + topic}},
		{"unauthorized, no user known", &publishError{topic: topic, err: sarama.ErrTopicAuthorizationFailed}, []string{"--allow-principal User:<worker> --operation Write --topic " + topic}},
		{"no IdempotentWrite", &publishError{topic: topic, principal: "User:svc", err: sarama.ErrClusterAuthorizationFailed}, []string{"lacks IdempotentWrite on the cluster", "--operation IdempotentWrite --cluster"}},
		{"unknown topic", &publishError{topic: topic, err: sarama.ErrUnknownTopicOrPartition}, []string{"RETRY_CREATE_TOPICS=true", "--create --topic " + topic}},
		{"invalid", &publishError{topic: topic, err: sarama.ErrInvalidRecord}, []string{"cleanup.policy=compact"}},
	} {
		fix := ErrorFix(fmt.Errorf("wrapped: %w", c.err))
		for _, w := range c.want {
			if !strings.Contains(fix, w) {
				t.Errorf("%s: fix %q does not say %q", c.name, fix, w)
			}
		}
	}
	if fix := ErrorFix(&publishError{topic: topic, err: sarama.ErrNotEnoughReplicas}); fix != "" {
		t.Errorf("a retriable error has nothing to fix, got %q", fix)
	}
	if e := (&publishError{topic: topic, err: sarama.ErrNotEnoughReplicas}); e.Error() != "publish to "+topic+": "+sarama.ErrNotEnoughReplicas.Error() {
		t.Errorf("Error() = %q", e.Error())
	}
}

// Which max.message.bytes a new retry or dead-letter topic gets from its
// source, read from DescribeConfigs entries.
func TestForwardTopicLimits(t *testing.T) {
	t.Parallel()
	entry := func(value string, src sarama.ConfigSource, synonyms ...*sarama.ConfigSynonym) []sarama.ConfigEntry {
		return []sarama.ConfigEntry{
			{Name: "retention.ms", Value: "1", Source: sarama.SourceTopic},
			{Name: configMaxMessageBytes, Value: value, Source: src, Default: src == sarama.SourceDefault, Synonyms: synonyms},
		}
	}
	brokerDefault := &sarama.ConfigSynonym{ConfigName: "message.max.bytes", ConfigValue: "1048588", Source: sarama.SourceDefault}
	for _, c := range []struct {
		name    string
		entries []sarama.ConfigEntry
		want    topicLimit
		copied  string // "" = not set on the new topic
	}{
		{"set on the topic, larger than the broker's", entry("2097152", sarama.SourceTopic,
			&sarama.ConfigSynonym{ConfigName: configMaxMessageBytes, ConfigValue: "2097152", Source: sarama.SourceTopic}, brokerDefault),
			topicLimit{bytes: 2097152, explicit: true, inherited: 1048588}, "2097152"},
		{"set on the topic, smaller than the broker's", entry("500000", sarama.SourceTopic, brokerDefault),
			topicLimit{bytes: 500000, explicit: true, inherited: 1048588}, ""},
		{"the broker's default", entry("1048588", sarama.SourceDefault),
			topicLimit{bytes: 1048588, inherited: 1048588}, ""},
		{"raised on the broker: new topics inherit it too", entry("8388608", sarama.SourceStaticBroker),
			topicLimit{bytes: 8388608, inherited: 8388608}, ""},
		{"DescribeConfigs v0: no source, not the default", entry("2097152", sarama.SourceUnknown),
			topicLimit{bytes: 2097152, explicit: true}, "2097152"},
	} {
		got, ok := parseLimit(c.entries)
		if !ok || got != c.want {
			t.Errorf("%s: parseLimit = %+v, %v; want %+v", c.name, got, ok, c.want)
			continue
		}
		if v, set := copiedLimit(got); v != c.copied || set != (c.copied != "") {
			t.Errorf("%s: copiedLimit = %q, %v; want %q", c.name, v, set, c.copied)
		}
	}
	if _, ok := parseLimit(entry("lots", sarama.SourceTopic)); ok {
		t.Error("an unparsable max.message.bytes was taken")
	}
	if _, ok := parseLimit(nil); ok {
		t.Error("a missing max.message.bytes was taken")
	}
	if got := producerLimit(2097152, 1048576); got != 2097152-61 {
		t.Errorf("producerLimit follows a larger source, less the record batch header: got %d", got)
	}
	if got := producerLimit(1048588, 1048576); got != 1048576 {
		t.Errorf("producerLimit of a source on Kafka's default is sarama's default: got %d", got)
	}
	if got := producerLimit(500000, 1048576); got != 1048576 {
		t.Errorf("producerLimit never goes below sarama's default: got %d", got)
	}
	if got := producerLimit(1<<30, 1048576); got >= int(sarama.MaxRequestSize) {
		t.Errorf("producerLimit must stay below sarama.MaxRequestSize: got %d", got)
	}
}

// Each source's retry and dead-letter topics are published through a
// producer whose Producer.MaxMessageBytes follows that source's
// max.message.bytes (never below sarama's default), so a batch never grows
// past a smaller topic's limit; a value set through WithSaramaConfig is
// kept, and settings that cannot carry a source's records are logged.
func TestForwarderProducerLimits(t *testing.T) {
	t.Parallel()
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	topo := NewTopology([]string{"big", "small"}, 1,
		func(src string, n int) string { return fmt.Sprintf("%s.g.retry.%d", src, n) },
		func(src string) string { return src + ".g.dlq" })
	limits := Limits{"big": {bytes: 4 << 20, explicit: true, inherited: 1048588}, "small": {bytes: 1048588, inherited: 1048588}}
	def := sarama.NewConfig().Producer.MaxMessageBytes

	start := func(t *testing.T, hooks ...func(*sarama.Config)) (*Forwarder, string) {
		t.Helper()
		base := sarama.NewConfig()
		base.ClientID = "kafkaworker"
		for _, hook := range hooks {
			hook(base)
		}
		var logs bytes.Buffer
		f, err := New(Params{Brokers: cluster.Addrs(), Group: "g", Policy: Policy{Topology: topo, Delays: []time.Duration{time.Second}},
			Base: base, Tracing: telemetry.NewTracing(nil, nil), Limits: limits, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return f, logs.String()
	}
	check := func(t *testing.T, f *Forwarder, source string, want int) {
		t.Helper()
		for _, name := range topo.ForwardTopics()[source] {
			if got := f.routes[name].maxBytes; got != want {
				t.Errorf("%s: Producer.MaxMessageBytes %d, want %d", name, got, want)
			}
		}
	}

	t.Run("following the sources", func(t *testing.T) {
		f, logs := start(t)
		check(t, f, "big", 4<<20-recordBatchOverhead)
		check(t, f, "small", def)
		if len(f.producers) != 2 || f.routes["big.g.dlq"].producer == f.routes["small.g.dlq"].producer {
			t.Errorf("%d producers, want one per limit (2)", len(f.producers))
		}
		if f.routes["big.g.retry.1"].producer != f.routes["big.g.dlq"].producer {
			t.Error("one source's topics use two producers")
		}
		if logs != "" {
			t.Errorf("logged with nothing to warn about:\n%s", logs)
		}
	})
	t.Run("set through WithSaramaConfig", func(t *testing.T) {
		f, logs := start(t, func(s *sarama.Config) {
			s.Producer.MaxMessageBytes = 3_000_000
			s.Consumer.Fetch.Max = 2 << 20
		})
		check(t, f, "big", 3_000_000)
		check(t, f, "small", 3_000_000)
		if len(f.producers) != 1 {
			t.Errorf("%d producers, want 1", len(f.producers))
		}
		for _, want := range []string{"source_max_message_bytes=4194304 producer_max_message_bytes=3000000 set_through_WithSaramaConfig=true",
			"sarama skips a record larger than Consumer.Fetch.Max", "consumer_fetch_max=2097152"} {
			if !strings.Contains(logs, want) {
				t.Errorf("the warnings do not say %q:\n%s", want, logs)
			}
		}
	})
}
