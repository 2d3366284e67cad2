package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The table notes say what each side runs with. They are built from the
// configurations themselves (the worker's sarama.Config is captured from
// worker.New through a WithSaramaConfig hook, which runs after the worker
// has set everything), so they cannot drift from the code.

// workerSaramaConfig returns the sarama.Config the worker builds from
// cfg.
func workerSaramaConfig(cfg worker.Config) (*sarama.Config, error) {
	var captured *sarama.Config
	nop := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	_, err := worker.New(cfg, nop,
		worker.WithRegisterer(prometheus.NewRegistry()),
		worker.WithSaramaConfig(func(c *sarama.Config) { cp := *c; captured = &cp }))
	if err != nil {
		return nil, err
	}
	return captured, nil
}

// describeSarama lists the sarama settings that matter here, the same way
// for both sides.
func describeSarama(c *sarama.Config) string {
	initial := "oldest"
	if c.Consumer.Offsets.Initial == sarama.OffsetNewest {
		initial = "newest"
	}
	var strategies []string
	for _, s := range c.Consumer.Group.Rebalance.GroupStrategies {
		strategies = append(strategies, s.Name())
	}
	autoCommit := "sarama auto-commit **off**"
	if c.Consumer.Offsets.AutoCommit.Enable {
		autoCommit = fmt.Sprintf("sarama auto-commit every %v", c.Consumer.Offsets.AutoCommit.Interval)
	}
	onOff := map[bool]string{true: "on", false: "off"}
	return fmt.Sprintf("initial offset %s, strategy **%s**, %s, Return.Errors %s, protocol %s, "+
		"fetch %d KiB per partition, channel buffer %d, rejoin backoff %v × %d, topic auto-creation %s",
		initial, strings.Join(strategies, ","), autoCommit, onOff[c.Consumer.Return.Errors], c.Version,
		c.Consumer.Fetch.Default/1024, c.ChannelBufferSize,
		c.Consumer.Group.Rebalance.Retry.Backoff, c.Consumer.Group.Rebalance.Retry.Max,
		onOff[c.Metadata.AllowAutoTopicCreation])
}

// rawSettingsNote says what the raw sarama side runs.
func rawSettingsNote() string {
	return "raw sarama: a `ConsumeClaim` loop that calls the no-op handler and `MarkMessage` per message, " +
		"one message at a time per partition; sarama " + describeSarama(rawSaramaConfig()) + "."
}

// workerSettingsNote says what the worker side runs: cfg (what the child
// gets from worker.ConfigFromEnv with the bench's variables) and the
// sarama.Config the worker builds from it.
func workerSettingsNote(cfg worker.Config) string {
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{"127.0.0.1:9092"} // New only validates; nothing connects
	}
	if cfg.GroupID == "" {
		cfg.GroupID = "bench-settings"
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{"bench-settings"}
	}
	sc, err := workerSaramaConfig(cfg)
	if err != nil {
		return fmt.Sprintf("kafkaworker: (could not build its sarama config: %v)", err)
	}
	retry := "no retry topics"
	if n := len(cfg.RetryTopicDelays); n > 0 {
		d := make([]string, n)
		for i, v := range cfg.RetryTopicDelays {
			d[i] = v.String()
		}
		retry = fmt.Sprintf("%d retry tiers (%s), each a topic with the source's partition count that the worker also consumes "+
			"(with cooperative-sticky, through a group member of their own that joins only while they hold work: here they stay empty, "+
			"so it claims the source's partitions only, and checks the tiers' end and committed offsets every second)", n, strings.Join(d, ", "))
	}
	dlq := "dead-letter off"
	if cfg.DLQEnabled {
		dlq = "dead-letter topic created (produced to only on failure, not consumed)"
	}
	return fmt.Sprintf("kafkaworker: worker.DefaultConfig() with ordering %s, concurrency %d, max in flight %d per partition; "+
		"offsets committed by the worker's own committer every %v (only handled offsets, with the done-set as metadata, on a second client connection), "+
		"plus a broker probe every second; %s; %s; Prometheus metrics on (registered, not served: METRICS_ADDR unset), "+
		"counters and duration and delay histograms updated per delivery; tracing as by default: otel's global provider, "+
		"a no-op until an application installs one, so no spans are started; sarama %s.",
		cfg.Ordering, cfg.Concurrency, cfg.MaxInFlight, cfg.CommitInterval, retry, dlq, describeSarama(sc))
}

// benchWorkerConfig is the worker.Config a child gets from the variables
// runChild sets (the defaults otherwise), for the notes.
func benchWorkerConfig(concurrency int, noRetryTopics bool) worker.Config {
	cfg := worker.DefaultConfig()
	cfg.Concurrency = concurrency
	if noRetryTopics {
		cfg.RetryTopicDelays = nil
	}
	return cfg
}

// secs converts seconds to a time.Duration.
func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
