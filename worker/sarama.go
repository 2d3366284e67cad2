package worker

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// saramaConfig turns a validated Config into a sarama.Config, applies the
// WithSaramaConfig hooks, and checks what the worker relies on.
func saramaConfig(c Config, hooks []func(*sarama.Config)) (*sarama.Config, error) {
	return saramaConfigWith(c, nil, hooks)
}

// saramaConfigWith is saramaConfig with the WithTokenProvider option, for
// KAFKA_SASL_MECHANISM=OAUTHBEARER.
func saramaConfigWith(c Config, tp sarama.AccessTokenProvider, hooks []func(*sarama.Config)) (*sarama.Config, error) {
	s := sarama.NewConfig()
	s.ClientID = c.ClientID
	if c.Version != "" {
		v, err := sarama.ParseKafkaVersion(c.Version)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_VERSION: %w", err)
		}
		s.Version = v
	}
	s.Consumer.Offsets.Initial = sarama.OffsetOldest
	if c.InitialOffset.canonical() == OffsetNewest {
		s.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	s.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{strategies[c.RebalanceStrategy]()}
	setIfPositive(&s.Consumer.Group.Session.Timeout, c.SessionTimeout)
	setIfPositive(&s.Consumer.Group.Heartbeat.Interval, c.HeartbeatInterval)
	setIfPositive(&s.Consumer.Group.Rebalance.Timeout, c.RebalanceTimeout)
	setIfPositive(&s.Metadata.RefreshFrequency, c.MetadataRefresh)
	s.Consumer.Group.InstanceId = c.InstanceID
	// sarama waits 2s before re-sending a JoinGroup or SyncGroup that met a
	// rebalance in progress. Meanwhile the member's session keeps the old
	// generation, so a member that is stopping cannot make its final commit
	// (the coordinator refuses the old generation) and the group waits for
	// it. The Java consumer's retry.backoff.ms is 100ms.
	// The retry count is raised to match, so a slow coordinator failover is
	// still waited out (about 6s, as sarama's 4 × 2s) before the session is
	// given up.
	s.Consumer.Group.Rebalance.Retry.Backoff = 200 * time.Millisecond
	s.Consumer.Group.Rebalance.Retry.Max = 30
	// A consumer never creates topics: with auto-creation on, a source
	// topic deleted while the worker runs would come back empty, with the
	// broker's default partition count, and the group would carry on
	// silently from its old offsets.
	s.Metadata.AllowAutoTopicCreation = false
	// The worker commits offsets itself (see committer.go), only what was
	// handled successfully, every CommitInterval and on release.
	s.Consumer.Offsets.AutoCommit.Enable = false
	s.Consumer.Return.Errors = true
	// TLS and SASL (KAFKA_TLS_*, KAFKA_SASL_*), before the hooks, so
	// WithSaramaConfig can still adjust them.
	if err := applySecurity(c, s, tp); err != nil {
		return nil, fmt.Errorf("kafkaworker: %w", err)
	}

	for _, hook := range hooks {
		if hook != nil {
			hook(s)
		}
	}
	if s.Consumer.Offsets.AutoCommit.Enable {
		return nil, errors.New("kafkaworker: WithSaramaConfig turned on Consumer.Offsets.AutoCommit.Enable; " +
			"the worker commits only offsets whose messages were handled, itself: " +
			"leave sarama's auto-commit off and tune WORKER_COMMIT_INTERVAL instead")
	}
	if !s.Consumer.Return.Errors {
		return nil, errors.New("kafkaworker: WithSaramaConfig turned off Consumer.Return.Errors; the worker reads that channel to log consumer errors: leave it on")
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("kafkaworker: sarama configuration: %w", err)
	}
	return s, nil
}

func setIfPositive[T ~int64](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}
