package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// demoEnv is what setup prepares: a cluster holding a topic full of
// messages, and the worker configuration to consume it.
type demoEnv struct {
	cluster  *kafkatest.Cluster
	config   worker.Config
	topic    string
	produced int
	// runID is written into every message, so that messages left in the
	// topic by earlier runs (a fixed KAFKA_TOPICS on a real cluster) are
	// recognised and left out of the checks.
	runID string
}

// setup connects to Kafka (embedded, or KAFKA_BROKERS), builds the worker
// configuration, creates the topic and produces the messages.
func setup(ctx context.Context, o options) (*demoEnv, error) {
	env := &demoEnv{runID: fmt.Sprintf("%s-%04x", time.Now().Format("20060102-150405"), rand.N(0x10000))}
	var err error
	if strings.TrimSpace(os.Getenv("KAFKA_BROKERS")) != "" {
		err = env.useRealCluster()
	} else {
		err = env.useEmbeddedBroker()
	}
	if err != nil {
		return nil, err
	}

	err = env.cluster.CreateTopic(ctx, env.topic, int32(o.partitions))
	if errors.Is(err, kerr.TopicAlreadyExists) {
		fmt.Fprintf(os.Stderr, "topic %s already exists; using it as it is\n", env.topic)
		err = nil
	}
	if err == nil {
		err = env.produce(ctx, o.messages, o.keys)
	}
	if err != nil {
		env.cluster.Close()
		return nil, err
	}
	return env, nil
}

// useEmbeddedBroker starts a broker inside this process and configures the
// worker in code: DefaultConfig, then the three required fields.
func (env *demoEnv) useEmbeddedBroker() error {
	c, err := kafkatest.NewCluster()
	if err != nil {
		return err
	}
	env.cluster = c
	env.topic = "quickstart-orders"
	env.config = worker.DefaultConfig()
	env.config.Brokers = c.Addrs()
	env.config.GroupID = "quickstart"
	env.config.Topics = []string{env.topic}
	fmt.Fprintf(os.Stderr, "started an embedded Kafka broker on %s (set KAFKA_BROKERS to use a real cluster)\n", strings.Join(c.Addrs(), ","))
	return nil
}

// useRealCluster connects to the cluster in KAFKA_BROKERS and configures the
// worker the way a production deployment does: from the environment, with
// worker.ConfigFromEnv (which also reads KAFKA_VERSION, WORKER_* and the
// rest; see worker.Config).
//
// KAFKA_GROUP_ID and KAFKA_TOPICS get run-unique defaults when unset: a new
// group has no committed offsets, so it starts at the beginning of the topic,
// and a new topic holds only this run's messages, so the checks are exact and
// the demo can be rerun against the same cluster as often as you like. (Each
// run leaves a small topic behind; delete quickstart-orders-* when done.)
func (env *demoEnv) useRealCluster() error {
	setDefault("KAFKA_GROUP_ID", "quickstart-"+env.runID)
	setDefault("KAFKA_TOPICS", "quickstart-orders-"+env.runID)
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		return err
	}
	if len(cfg.Topics) != 1 {
		return fmt.Errorf("KAFKA_TOPICS=%q: the quickstart produces to and consumes one topic; name just one", os.Getenv("KAFKA_TOPICS"))
	}
	c, err := kafkatest.Connect(cfg.Brokers)
	if err != nil {
		return err
	}
	env.cluster, env.config, env.topic = c, cfg, cfg.Topics[0]
	fmt.Fprintf(os.Stderr, "using the Kafka cluster at %s\n", strings.Join(cfg.Brokers, ","))
	return nil
}

func setDefault(name, value string) {
	if os.Getenv(name) == "" {
		_ = os.Setenv(name, value)
	}
}

// produce writes n messages spread round-robin over the given number of keys.
// Message i belongs to key i%keys and is that key's message number i/keys,
// so each key's values carry the sequence 0, 1, 2, ... in produce order.
func (env *demoEnv) produce(ctx context.Context, n, keys int) error {
	start := time.Now()
	err := env.cluster.ProduceN(ctx, env.topic, n, func(i int) (key, value []byte) {
		k := customerKey(i % keys)
		return []byte(k), []byte(formatValue(env.runID, k, i/keys))
	})
	if err != nil {
		return err
	}
	env.produced = n
	fmt.Fprintf(os.Stderr, "produced %d messages over %d keys to topic %s in %v\n",
		n, keys, env.topic, time.Since(start).Round(time.Millisecond))
	return nil
}

func customerKey(k int) string { return fmt.Sprintf("customer-%04d", k) }

// A message value, e.g. "run=20250101-120000-1a2b key=customer-0042 seq=17".
func formatValue(runID, key string, seq int) string {
	return fmt.Sprintf("run=%s key=%s seq=%d", runID, key, seq)
}

func parseValue(v []byte) (runID, key string, seq int, err error) {
	_, err = fmt.Sscanf(string(v), "run=%s key=%s seq=%d", &runID, &key, &seq)
	return runID, key, seq, err
}

// partitionOffsets is one partition's committed and end offset.
type partitionOffsets struct {
	partition      int32
	committed, end int64 // committed is -1 when the group committed nothing
}

// readOffsets reads, through kafkatest's own client (which shares no code
// with the worker), what the group committed and where each partition ends.
func readOffsets(ctx context.Context, env *demoEnv) ([]partitionOffsets, error) {
	end, err := env.cluster.EndOffsets(ctx, env.topic)
	if err != nil {
		return nil, err
	}
	committed, err := env.cluster.CommittedOffsets(ctx, env.config.GroupID, env.topic)
	if err != nil {
		return nil, err
	}
	out := make([]partitionOffsets, len(end))
	for p, e := range end {
		c, ok := committed[p]
		if !ok {
			c = -1
		}
		if int(p) >= len(out) {
			return nil, fmt.Errorf("topic %s: unexpected partition %d of %d", env.topic, p, len(end))
		}
		out[p] = partitionOffsets{partition: p, committed: c, end: e}
	}
	return out, nil
}
