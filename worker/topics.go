package worker

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
)

// hop says where a consumed topic sits in the failure flow: a source topic
// (tier 0) or retry tier n of a source topic.
type hop struct {
	source string
	tier   int
}

// topology names the retry and dead-letter topics of each source topic.
type topology struct {
	tiers map[string][]string // source -> retry topic of tier n at [n-1]
	dlq   map[string]string   // source -> dead-letter topic ("" when disabled)
	hops  map[string]hop      // every consumed topic -> its place
}

func newTopology(c Config) topology {
	t := topology{tiers: map[string][]string{}, dlq: map[string]string{}, hops: map[string]hop{}}
	for _, src := range c.Topics {
		t.hops[src] = hop{source: src}
		for n := 1; n <= len(c.RetryTopicDelays); n++ {
			name := c.RetryTopic(src, n)
			t.tiers[src] = append(t.tiers[src], name)
			t.hops[name] = hop{source: src, tier: n}
		}
		if c.DLQEnabled {
			t.dlq[src] = c.DLQTopic(src)
		}
	}
	return t
}

// RetryTopic returns the name of retry tier n (1-based) of source, from
// RETRY_TOPIC_TEMPLATE.
func (c Config) RetryTopic(source string, n int) string {
	return expandTopic(c.RetryTopicTemplate, source, c.GroupID, n)
}

// DLQTopic returns the name of source's dead-letter topic, from
// DLQ_TOPIC_TEMPLATE.
func (c Config) DLQTopic(source string) string {
	return expandTopic(c.DLQTopicTemplate, source, c.GroupID, 0)
}

func expandTopic(template, topic, group string, n int) string {
	return strings.NewReplacer("{topic}", topic, "{group}", group, "{n}", strconv.Itoa(n)).Replace(template)
}

// consumed lists the topics the worker subscribes to: the sources and
// every retry tier.
func (t topology) consumed() []string {
	out := make([]string, 0, len(t.hops))
	for name := range t.hops {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// forwardTopics lists the retry and dead-letter topics, by source.
func (t topology) forwardTopics() map[string][]string {
	out := map[string][]string{}
	for src, tiers := range t.tiers {
		out[src] = append(out[src], tiers...)
	}
	for src, dlq := range t.dlq {
		out[src] = append(out[src], dlq)
	}
	return out
}

// ensureTopics checks that every retry and dead-letter topic exists,
// creating the missing ones with the source topic's partition count and
// replication factor when create is set. The error names every topic it
// could not have and how to fix it.
func ensureTopics(admin sarama.ClusterAdmin, t topology, create bool) error {
	need := t.forwardTopics()
	existing, err := admin.ListTopics()
	if err != nil {
		return fmt.Errorf("kafkaworker: list topics to check the retry and dead-letter topics: %w", err)
	}
	var missing []string
	for _, src := range sortedKeys(need) {
		if _, ok := existing[src]; !ok {
			missing = append(missing, src)
		}
	}
	if len(missing) > 0 { // checkSourceTopics passed, so deleted since
		return sourceTopicsMissing(missing)
	}
	var problems []string
	for _, src := range sortedKeys(need) {
		detail := existing[src]
		for _, name := range need[src] {
			if _, ok := existing[name]; ok {
				continue
			}
			if !create {
				problems = append(problems, fmt.Sprintf("%q is missing: create it with %d partitions (like %q), e.g. kafka-topics.sh --create --topic %s --partitions %d --replication-factor %d",
					name, detail.NumPartitions, src, name, detail.NumPartitions, detail.ReplicationFactor))
				continue
			}
			err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: detail.NumPartitions, ReplicationFactor: detail.ReplicationFactor}, false)
			if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
				problems = append(problems, fmt.Sprintf("%q could not be created: %v", name, err))
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	hint := ""
	if !create {
		hint = "\n  (or set RETRY_CREATE_TOPICS=true to let the worker create them)"
	}
	return fmt.Errorf("kafkaworker: retry and dead-letter topics are not ready:\n  - %s%s", strings.Join(problems, "\n  - "), hint)
}

// checkSourceTopics returns an error naming every topic in topics that does
// not exist. It asks for the metadata of just those topics with automatic
// topic creation off (metadata v4+, so KAFKA_VERSION 0.11 and later), so
// asking does not create them.
func checkSourceTopics(admin sarama.ClusterAdmin, topics []string) error {
	meta, err := admin.DescribeTopics(topics)
	if err != nil {
		return fmt.Errorf("kafkaworker: describe the source topics %v to check they exist: %w", topics, err)
	}
	var missing []string
	for _, t := range meta {
		if t.Err == sarama.ErrUnknownTopicOrPartition {
			missing = append(missing, t.Name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return sourceTopicsMissing(missing)
}

// sourceTopicsMissing is the one error for source topics that do not exist,
// whether or not retry topics are on.
func sourceTopicsMissing(missing []string) error {
	slices.Sort(missing)
	quoted := make([]string, len(missing))
	for i, t := range missing {
		quoted[i] = strconv.Quote(t)
	}
	what, it := "source topic does not exist", "it"
	if len(missing) > 1 {
		what, it = "source topics do not exist", "them"
	}
	return fmt.Errorf("kafkaworker: %s: %s: create %s (e.g. kafka-topics.sh --create --topic %s --partitions <n>) or fix KAFKA_TOPICS",
		what, strings.Join(quoted, ", "), it, missing[0])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
