package forward

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/attr"
)

// Hop says where a consumed topic sits in the failure flow: a source topic
// (Tier 0) or retry tier n of a source topic.
type Hop struct {
	Source string
	Tier   int
}

// Topology names the retry and dead-letter topics of each source topic.
type Topology struct {
	tiers map[string][]string // source -> retry topic of tier n at [n-1]
	dlq   map[string]string   // source -> dead-letter topic ("" when disabled)
	hops  map[string]Hop      // every consumed topic -> its place
}

// NewTopology names the topics of sources: tiers retry tiers each, named
// by retryTopic (n from 1), and a dead-letter topic named by dlqTopic, or
// none when dlqTopic is nil.
func NewTopology(sources []string, tiers int, retryTopic func(source string, n int) string, dlqTopic func(source string) string) Topology {
	t := Topology{tiers: map[string][]string{}, dlq: map[string]string{}, hops: map[string]Hop{}}
	for _, src := range sources {
		t.hops[src] = Hop{Source: src}
		for n := 1; n <= tiers; n++ {
			name := retryTopic(src, n)
			t.tiers[src] = append(t.tiers[src], name)
			t.hops[name] = Hop{Source: src, Tier: n}
		}
		if dlqTopic != nil {
			t.dlq[src] = dlqTopic(src)
		}
	}
	return t
}

// Hop returns where topic sits; the zero Hop for a topic not consumed.
func (t Topology) Hop(topic string) Hop { return t.hops[topic] }

// Consumed lists the topics the worker subscribes to: the sources and
// every retry tier.
func (t Topology) Consumed() []string {
	out := make([]string, 0, len(t.hops))
	for name := range t.hops {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// ForwardTopics lists the retry and dead-letter topics, by source.
func (t Topology) ForwardTopics() map[string][]string {
	out := map[string][]string{}
	for src, tiers := range t.tiers {
		out[src] = append(out[src], tiers...)
	}
	for src, dlq := range t.dlq {
		out[src] = append(out[src], dlq)
	}
	return out
}

// EnsureTopics checks that every retry and dead-letter topic exists,
// creating the missing ones with the source topic's partition count and
// replication factor, and its max.message.bytes when the source sets one
// larger than the broker's (see copiedLimit), when create is set. A retry
// or dead-letter topic that already exists with a smaller max.message.bytes
// than its source is logged at Warn with the command that fixes it. The
// error names every topic it could not have and how to fix it. It returns
// the max.message.bytes of the topics it could read (see readLimits).
func EnsureTopics(admin sarama.ClusterAdmin, t Topology, create bool, log *slog.Logger) (Limits, error) {
	need := t.ForwardTopics()
	existing, err := admin.ListTopics()
	if err != nil {
		return nil, fmt.Errorf("kafkaworker: list topics to check the retry and dead-letter topics: %w", err)
	}
	var missing []string
	for _, src := range sortedKeys(need) {
		if _, ok := existing[src]; !ok {
			missing = append(missing, src)
		}
	}
	if len(missing) > 0 { // the start-up check passed, so deleted since
		return nil, &MissingSourcesError{Topics: missing}
	}
	limits := readLimits(admin, need, existing, log)
	var problems []string
	for _, src := range sortedKeys(need) {
		detail := existing[src]
		srcLimit, srcKnown := limits[src]
		copied, copyLimit := copiedLimit(srcLimit)
		for _, name := range need[src] {
			if _, ok := existing[name]; ok {
				warnSmallerLimit(log, src, name, limits)
				continue
			}
			if !create {
				extra := ""
				if copyLimit {
					extra = fmt.Sprintf(" --config %s=%s (like %q)", configMaxMessageBytes, copied, src)
				}
				problems = append(problems, fmt.Sprintf("%q is missing: create it with %d partitions (like %q), e.g. kafka-topics.sh --create --topic %s --partitions %d --replication-factor %d%s",
					name, detail.NumPartitions, src, name, detail.NumPartitions, detail.ReplicationFactor, extra))
				continue
			}
			td := &sarama.TopicDetail{NumPartitions: detail.NumPartitions, ReplicationFactor: detail.ReplicationFactor}
			if copyLimit {
				td.ConfigEntries = map[string]*string{configMaxMessageBytes: &copied}
			}
			err := admin.CreateTopic(name, td, false)
			switch {
			case err == nil && srcKnown:
				if l := srcLimit.created(copyLimit); l > 0 {
					limits[name] = topicLimit{bytes: l}
				}
			case err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists):
				problems = append(problems, fmt.Sprintf("%q could not be created: %v", name, err))
			}
		}
	}
	if len(problems) == 0 {
		return limits, nil
	}
	hint := ""
	if !create {
		hint = "\n  (or set RETRY_CREATE_TOPICS=true to let the worker create them)"
	}
	return nil, fmt.Errorf("kafkaworker: retry and dead-letter topics are not ready:\n  - %s%s", strings.Join(problems, "\n  - "), hint)
}

// configMaxMessageBytes is the topic config that bounds the size of a
// record batch the broker accepts on the topic (message.max.bytes on the
// broker).
const configMaxMessageBytes = "max.message.bytes"

// topicLimit is what DescribeConfigs says of a topic's max.message.bytes.
type topicLimit struct {
	bytes     int  // the value in force
	explicit  bool // set on the topic itself, not inherited from the broker
	inherited int  // what the topic would have without its own setting (the broker's); 0 when not known
}

// Limits holds the max.message.bytes of the source, retry and
// dead-letter topics whose configuration could be read, by topic name.
type Limits map[string]topicLimit

// created is the max.message.bytes a retry or dead-letter topic created
// for a source with limit l has: the copied value, or what a new topic
// inherits from the broker (0 when not known).
func (l topicLimit) created(copied bool) int {
	if copied || !l.explicit {
		return l.bytes
	}
	return l.inherited
}

// copiedLimit says whether a retry or dead-letter topic created for a
// source with limit l gets max.message.bytes set, and to what. It is set
// only when the source sets it on the topic and to more than the topic
// would inherit from the broker: a source that follows the broker's value
// leaves its new topics following it too (a later change of the broker's
// message.max.bytes then applies to both), and a smaller value is not
// copied, since a retry topic stricter than its source gains nothing and
// the forwarder's producer, which never goes below sarama's 1 MiB default,
// could batch records past it. When the broker's value is not reported
// (DescribeConfigs before v1 has no synonyms) sarama's default producer
// limit stands in for it.
func copiedLimit(l topicLimit) (string, bool) {
	inherited := l.inherited
	if inherited == 0 {
		inherited = sarama.NewConfig().Producer.MaxMessageBytes
	}
	if !l.explicit || l.bytes <= inherited {
		return "", false
	}
	return strconv.Itoa(l.bytes), true
}

// readLimits reads max.message.bytes of every source topic in need and of
// every retry and dead-letter topic that already exists, in one
// DescribeConfigs request. What cannot be read is logged at Warn and left
// out: the worker then starts as before, creating its topics with the
// broker's default and keeping sarama's producer limit.
func readLimits(admin sarama.ClusterAdmin, need map[string][]string, existing map[string]sarama.TopicDetail, log *slog.Logger) Limits {
	var resources []*sarama.ConfigResource
	for _, src := range sortedKeys(need) {
		names := append([]string{src}, need[src]...)
		for _, name := range names {
			if _, ok := existing[name]; ok {
				resources = append(resources, &sarama.ConfigResource{Type: sarama.TopicResource, Name: name, ConfigNames: []string{configMaxMessageBytes}})
			}
		}
	}
	limits := Limits{}
	const consequence = "retry and dead-letter topics are created with the broker's max.message.bytes, and records larger than the forwarder's Producer.MaxMessageBytes cannot be forwarded"
	results, err := admin.DescribeConfigs(resources, sarama.DescribeConfigsOptions{IncludeSynonyms: true})
	if err != nil {
		log.Warn("could not read max.message.bytes of the source, retry and dead-letter topics; "+consequence,
			slog.Any("error", err))
		return limits
	}
	for _, r := range results {
		if r.ErrorCode != sarama.ErrNoError {
			log.Warn("could not read max.message.bytes of a topic; "+consequence,
				attr.Topic(r.Name), slog.Any("error", r.ErrorCode), slog.String("detail", r.ErrorMsg))
			continue
		}
		if l, ok := parseLimit(r.Configs); ok {
			limits[r.Name] = l
		}
	}
	return limits
}

// parseLimit reads max.message.bytes out of a topic's config entries.
func parseLimit(entries []sarama.ConfigEntry) (topicLimit, bool) {
	for _, e := range entries {
		if e.Name != configMaxMessageBytes {
			continue
		}
		n, err := strconv.Atoi(e.Value)
		if err != nil || n <= 0 {
			return topicLimit{}, false
		}
		l := topicLimit{bytes: n, explicit: e.Source == sarama.SourceTopic || (e.Source == sarama.SourceUnknown && !e.Default)}
		if !l.explicit {
			l.inherited = n
		}
		for _, syn := range e.Synonyms { // in precedence order: the topic's own setting first
			if syn.Source == sarama.SourceTopic {
				continue
			}
			if v, err := strconv.Atoi(syn.ConfigValue); err == nil && v > 0 && l.explicit {
				l.inherited = v
			}
			break
		}
		return l, true
	}
	return topicLimit{}, false
}

// warnSmallerLimit logs at Warn when the existing retry or dead-letter
// topic fwd accepts smaller records than its source src: a record that
// fails there and is larger than fwd's limit cannot be forwarded, and
// stays uncommitted until the limit is raised.
func warnSmallerLimit(log *slog.Logger, src, fwd string, limits Limits) {
	s, ok1 := limits[src]
	f, ok2 := limits[fwd]
	if !ok1 || !ok2 || f.bytes >= s.bytes {
		return
	}
	log.Warn("a retry or dead-letter topic accepts smaller records than its source topic: a failing record larger than its limit cannot be forwarded, and its offset stays uncommitted until the limit is raised",
		slog.String("forward_topic", fwd), slog.Int("forward_max_message_bytes", f.bytes),
		slog.String("source_topic", src), slog.Int("source_max_message_bytes", s.bytes),
		slog.String("fix", raiseLimitCommand(fwd, s.bytes)))
}

// raiseLimitCommand is the command that sets topic's max.message.bytes to n.
func raiseLimitCommand(topic string, n int) string {
	return fmt.Sprintf("kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config %s=%d",
		topic, configMaxMessageBytes, n)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// MissingSourcesError is EnsureTopics' error for source topics that were
// deleted since the worker checked them; Topics are sorted.
type MissingSourcesError struct{ Topics []string }

func (e *MissingSourcesError) Error() string {
	return fmt.Sprintf("source topics do not exist: %s", strings.Join(e.Topics, ", "))
}
