package worker

import (
	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/kconn"
)

// saramaConfig turns a validated Config into a sarama.Config, applies the
// WithSaramaConfig hooks, and checks what the worker relies on (see
// kconn.SaramaConfig).
func saramaConfig(c Config, hooks []func(*sarama.Config)) (*sarama.Config, error) {
	return saramaConfigWith(c, nil, hooks)
}

// saramaConfigWith is saramaConfig with the WithTokenProvider option, for
// KAFKA_SASL_MECHANISM=OAUTHBEARER.
func saramaConfigWith(c Config, tp sarama.AccessTokenProvider, hooks []func(*sarama.Config)) (*sarama.Config, error) {
	var strategy sarama.BalanceStrategy
	if mk := strategies[c.RebalanceStrategy]; mk != nil {
		strategy = mk()
	}
	return kconn.SaramaConfig(kconn.Settings{
		ClientID: c.ClientID, Version: c.Version, InitialNewest: c.InitialOffset.canonical() == OffsetNewest,
		Strategy: strategy, SessionTimeout: c.SessionTimeout, HeartbeatInterval: c.HeartbeatInterval,
		RebalanceTimeout: c.RebalanceTimeout, MetadataRefresh: c.MetadataRefresh, InstanceID: c.InstanceID,
		Security: c.security(), TokenProvider: tp, Hooks: hooks,
	})
}
