package kconn

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// Settings are what a sarama configuration is built from: the worker's
// validated configuration, its WithTokenProvider and WithSaramaConfig
// options.
type Settings struct {
	ClientID          string
	Version           string // KAFKA_VERSION; "" for sarama's
	InitialNewest     bool   // KAFKA_INITIAL_OFFSET=newest
	Strategy          sarama.BalanceStrategy
	SessionTimeout    time.Duration // 0: sarama's
	HeartbeatInterval time.Duration // 0: sarama's
	RebalanceTimeout  time.Duration // 0: sarama's
	MetadataRefresh   time.Duration // 0: sarama's
	InstanceID        string
	Security          Security
	TokenProvider     sarama.AccessTokenProvider // OAUTHBEARER only
	Hooks             []func(*sarama.Config)     // WithSaramaConfig, applied last
	ReadCommitted     bool                       // exactly-once: fetch only committed transactions' records
}

// SaramaConfig turns c into a sarama.Config, applies the hooks, and checks
// what the worker relies on.
func SaramaConfig(c Settings) (*sarama.Config, error) {
	// Client id, version, TLS and SASL (KAFKA_TLS_*, KAFKA_SASL_*) and no
	// automatic topic creation, as every client of the module has them,
	// before the hooks, so WithSaramaConfig can still adjust them.
	s, err := Conn{ClientID: c.ClientID, Version: c.Version, Security: c.Security}.Sarama(c.TokenProvider)
	if err != nil {
		return nil, err
	}
	s.Consumer.Offsets.Initial = sarama.OffsetOldest
	if c.InitialNewest {
		s.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	if c.Strategy != nil {
		s.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{c.Strategy}
	}
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
	s.Metadata.AllowAutoTopicCreation = false // Conn.Sarama's too; the reason, for the worker
	// The worker commits offsets itself (see internal/commit), only what was
	// handled successfully, every CommitInterval and on release.
	s.Consumer.Offsets.AutoCommit.Enable = false
	s.Consumer.Return.Errors = true
	if c.ReadCommitted {
		s.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	for _, hook := range c.Hooks {
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
	if c.ReadCommitted && s.Consumer.IsolationLevel != sarama.ReadCommitted {
		return nil, errors.New("kafkaworker: WithSaramaConfig set Consumer.IsolationLevel to read_uncommitted with WORKER_EXACTLY_ONCE on; " +
			"the worker would handle records of aborted transactions: leave it read_committed")
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("kafkaworker: sarama configuration: %w", err)
	}
	return s, nil
}

func setIfPositive(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}
