package worker

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/forward"
)

// forward.Topology is the worker's retry and dead-letter topics, named from c.
func (c Config) topology() forward.Topology {
	var dlq func(string) string
	if c.DLQEnabled {
		dlq = c.DLQTopic
	}
	return forward.NewTopology(c.Topics, len(c.RetryTopicDelays), c.RetryTopic, dlq)
}

// retryPolicy is where the worker sends failed messages, over topo.
func (c Config) retryPolicy(topo forward.Topology) forward.Policy {
	return forward.Policy{Topology: topo, LocalAttempts: c.RetryLocalAttempts, Delays: c.RetryTopicDelays}
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

// checkSourceTopics returns an error naming every source topic of c that
// does not exist (a *MissingTopicsError), or a *FatalError naming those the
// worker may not describe (the broker answers TOPIC_AUTHORIZATION_FAILED
// for them, and hides them from a listing). It
// asks for the metadata of just those topics with automatic topic creation
// off (metadata v4+, so KAFKA_VERSION 0.11 and later), so asking does not
// create them.
func checkSourceTopics(admin sarama.ClusterAdmin, c Config) error {
	meta, err := admin.DescribeTopics(c.Topics)
	if err != nil {
		return fmt.Errorf("kafkaworker: describe the source topics %v to check they exist: %w", c.Topics, err)
	}
	var missing, denied []string
	for _, t := range meta {
		switch t.Err {
		case sarama.ErrUnknownTopicOrPartition:
			missing = append(missing, t.Name)
		case sarama.ErrTopicAuthorizationFailed:
			denied = append(denied, t.Name)
		}
	}
	if len(denied) > 0 {
		slices.Sort(denied)
		return &FatalError{Err: sarama.ErrTopicAuthorizationFailed, Hint: fatalHints[sarama.ErrTopicAuthorizationFailed](c, denied)}
	}
	if len(missing) == 0 {
		return nil
	}
	return sourceTopicsMissing(missing)
}
