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

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// demoEnv is what setup prepares: a cluster holding a topic full of
// messages, and the worker configuration to consume it.
type demoEnv struct {
	cluster  *kafkatest.Cluster
	config   worker.Config
	topic    string
	dlqTopic string // where messages that failed for good end up
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
	env.dlqTopic = strings.NewReplacer("{topic}", env.topic, "{group}", env.config.GroupID).Replace(env.config.DLQTopicTemplate)

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
// worker from the environment like a deployment (see configFromEnv), with
// KAFKA_BROKERS pointing at the embedded broker: WORKER_*, RETRY_*, DLQ_*
// and the rest are honoured here too.
func (env *demoEnv) useEmbeddedBroker() error {
	c, err := kafkatest.NewCluster()
	if err != nil {
		return err
	}
	env.cluster = c
	cfg, err := configFromEnv(map[string]string{
		"KAFKA_BROKERS": strings.Join(c.Addrs(), ","), "KAFKA_GROUP_ID": "quickstart", "KAFKA_TOPICS": "quickstart-orders",
	})
	if err != nil {
		c.Close()
		return err
	}
	env.config, env.topic = cfg, cfg.Topics[0]
	fmt.Fprintf(os.Stderr, "started an embedded Kafka broker on %s (set KAFKA_BROKERS to use a real cluster)\n", strings.Join(c.Addrs(), ","))
	return nil
}

// useRealCluster connects to the cluster in KAFKA_BROKERS and configures the
// worker the way a production deployment does (see configFromEnv).
//
// KAFKA_GROUP_ID and KAFKA_TOPICS get run-unique defaults when unset: a new
// group has no committed offsets, so it starts at the beginning of the topic,
// and a new topic holds only this run's messages, so the checks are exact and
// the demo can be rerun against the same cluster as often as you like. (Each
// run leaves a small topic behind, with its two retry topics and its
// dead-letter topic; delete quickstart-orders-* when done.)
func (env *demoEnv) useRealCluster() error {
	cfg, err := configFromEnv(map[string]string{
		"KAFKA_GROUP_ID": "quickstart-" + env.runID, "KAFKA_TOPICS": "quickstart-orders-" + env.runID,
	})
	if err != nil {
		return err
	}
	c, err := kafkatest.Connect(cfg.Brokers)
	if err != nil {
		return err
	}
	env.cluster, env.config, env.topic = c, cfg, cfg.Topics[0]
	fmt.Fprintf(os.Stderr, "using the Kafka cluster at %s\n", strings.Join(cfg.Brokers, ","))
	return nil
}

// configFromEnv reads the worker's configuration with worker.ConfigFromEnv
// (KAFKA_*, WORKER_*, RETRY_*, DLQ_*, METRICS_ADDR; see worker.Config),
// after setting the unset variables among defaults. The RETRY_* settings
// default to fast ones, so the demo's failing messages do not hold their
// keys up long (the worker's defaults are 100ms, 5s and 10s,1m,10m).
func configFromEnv(defaults map[string]string) (worker.Config, error) {
	defaults["RETRY_BACKOFF_INITIAL"], defaults["RETRY_BACKOFF_MAX"], defaults["RETRY_TOPIC_DELAYS"] = "20ms", "200ms", "1s,5s"
	for name, value := range defaults {
		setDefault(name, value)
	}
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		return cfg, err
	}
	if len(cfg.Topics) != 1 {
		return cfg, fmt.Errorf("KAFKA_TOPICS=%q: the quickstart produces to and consumes one topic; name just one", os.Getenv("KAFKA_TOPICS"))
	}
	return cfg, nil
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
		return []byte(k), []byte(formatValue(env.runID, k, i/keys, i))
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

// A message value, e.g. "run=20250101-120000-1a2b key=customer-0042
// seq=17 n=17042": seq numbers the key's messages, n all of them.
func formatValue(runID, key string, seq, n int) string {
	return fmt.Sprintf("run=%s key=%s seq=%d n=%d", runID, key, seq, n)
}

func parseValue(v []byte) (runID, key string, seq, n int, err error) {
	_, err = fmt.Sscanf(string(v), "run=%s key=%s seq=%d n=%d", &runID, &key, &seq, &n)
	return runID, key, seq, n, err
}

// fate is how the demo's handler treats a message.
type fate int

const (
	succeeds fate = iota
	flaky         // fails on its first delivery, succeeds on the next
	poison        // fails for good: retry.Permanent, so it is dead-lettered
)

// fateOf decides by the message's number n, so every run fails the same
// messages: about one in flakyOneIn is flaky and one in poisonOneIn is
// poison (0: none). A hash of n picks them, so that they spread over all
// keys whatever -keys is.
func (o options) fateOf(value []byte) fate {
	_, _, _, n, err := parseValue(value)
	switch {
	case err != nil:
		return succeeds
	case oneIn(n, 1, o.poisonOneIn):
		return poison
	case oneIn(n, 2, o.flakyOneIn):
		return flaky
	}
	return succeeds
}

// oneIn reports whether n is picked, as about one number in every (0:
// none), by a SplitMix64 hash of n and salt.
func oneIn(n, salt, every int) bool {
	if every <= 0 {
		return false
	}
	h := uint64(n)*0x9e3779b97f4a7c15 + uint64(salt)
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	return (h^h>>31)%uint64(every) == 0
}

// deadLetter is one of this run's messages read back from the dead-letter
// topic, with what the worker wrote in its kw-* headers.
type deadLetter struct {
	id   msgID
	info retry.Info // where it came from, the attempt, the error
}

// readDeadLetters reads the dead-letter topic through kafkatest's own
// client. Records of earlier runs are counted, not returned; a topic that
// does not exist (yet) reads as empty.
func readDeadLetters(ctx context.Context, env *demoEnv) (ours []deadLetter, others int, err error) {
	if !env.config.DLQEnabled {
		return nil, 0, nil
	}
	recs, err := env.cluster.ReadAll(ctx, env.dlqTopic)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	for _, r := range recs {
		runID, key, seq, _, err := parseValue(r.Value)
		if err != nil || runID != env.runID {
			others++
			continue
		}
		var hs []handler.Header
		for k, v := range r.Headers {
			hs = append(hs, handler.Header{Key: k, Value: []byte(v)})
		}
		info, _ := retry.ReadInfo(hs)
		ours = append(ours, deadLetter{id: msgID{key, seq}, info: info})
	}
	return ours, others, nil
}

// waitDeadLettered waits until want of this run's messages are in the
// dead-letter topic: the handler has failed them for good, and the worker
// publishes them there, committing their offsets only once acknowledged.
func waitDeadLettered(ctx context.Context, env *demoEnv, want int) error {
	for {
		got, _, err := readDeadLetters(ctx, env)
		switch {
		case err == nil && len(got) >= want:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("FAIL: %d of %d poison messages reached %s: %w", len(got), want, env.dlqTopic, ctx.Err())
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
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
