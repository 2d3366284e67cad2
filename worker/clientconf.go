package worker

import (
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/clientconf"
)

// Connection settings for tools that talk to the same cluster as a worker
// without being one (the kafkaworker command): read from the environment
// exactly as ConfigFromEnv reads them, and turned into a sarama
// configuration by the worker's own code path. They reach the tools
// through internal/clientconf, registered here, and are not part of
// worker's API.

func init() { clientconf.Register(clientConnFromEnv) }

// clientVars are the variables clientConfigFromEnv reads: the connection
// settings and the naming templates. Every other variable (the group, the
// topics, WORKER_*, ...) belongs to a running worker and is ignored, so a
// tool run with a worker's environment, or with KAFKA_BROKERS alone, works.
var clientVars = []string{
	"KAFKA_BROKERS", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CLIENT_ID", "KAFKA_VERSION",
	"RETRY_TOPIC_TEMPLATE", "DLQ_TOPIC_TEMPLATE",
}

// clientPlaceholder fills the settings a worker requires and a client does
// not, so validation looks at the connection settings only.
const clientPlaceholder = "kafkaworker-client"

// clientConfigFromEnv reads the connection settings from the process
// environment: KAFKA_BROKERS (or KAFKA_BOOTSTRAP_SERVERS), KAFKA_CLIENT_ID,
// KAFKA_VERSION, every KAFKA_TLS_* and KAFKA_SASL_* variable, and the
// RETRY_TOPIC_TEMPLATE and DLQ_TOPIC_TEMPLATE names. They are parsed and
// validated exactly as ConfigFromEnv does (TLS files are read, SASL settings
// checked), and the error names every offending variable.
//
// brokers, when not empty, replaces KAFKA_BROKERS and KAFKA_BOOTSTRAP_SERVERS
// (a command's --brokers flag). GroupID and Topics of the result are empty;
// the caller sets them if it needs DLQTopic or RetryTopic.
func clientConfigFromEnv(brokers []string) (Config, error) {
	environ := map[string]string{}
	for k, v := range envMap(os.Environ()) {
		if isClientVar(k) {
			environ[k] = v
		}
	}
	if len(brokers) > 0 {
		delete(environ, "KAFKA_BOOTSTRAP_SERVERS")
		environ["KAFKA_BROKERS"] = strings.Join(brokers, ",")
	}
	environ["KAFKA_GROUP_ID"] = clientPlaceholder
	environ["KAFKA_TOPICS"] = clientPlaceholder
	c, err := configFrom(environ)
	if err != nil {
		return Config{}, err
	}
	c.GroupID, c.Topics = "", nil
	return c, nil
}

func isClientVar(name string) bool {
	if strings.HasPrefix(name, "KAFKA_TLS_") || strings.HasPrefix(name, "KAFKA_SASL_") {
		return true
	}
	for _, v := range clientVars {
		if v == name {
			return true
		}
	}
	return false
}

// saramaClientConfig returns the sarama configuration for a plain client of
// the cluster c names (an admin, a producer, a consumer outside any worker):
// client id, protocol version, and the TLS and SASL settings, built by the
// same code as the worker's own configuration. Automatic topic creation is
// off, as in the worker, so a mistyped topic name is an error rather than a
// new topic. tp supplies OAUTHBEARER tokens and may be nil otherwise; with
// KAFKA_SASL_MECHANISM=OAUTHBEARER and a nil tp it fails naming the setting.
//
// The caller adjusts what its own use needs (Producer.Return.Successes,
// Producer.Idempotent, ...) and sarama validates again when the client is
// created.
func saramaClientConfig(c Config, tp sarama.AccessTokenProvider) (*sarama.Config, error) {
	if c.saslMechanism() == SASLOAuthBearer && tp == nil {
		return nil, fmt.Errorf("kafkaworker: KAFKA_SASL_MECHANISM=%s needs a token provider, and none was given: use PLAIN or SCRAM credentials here", SASLOAuthBearer)
	}
	// A Config filled in code may hold only the connection settings.
	if c.RebalanceStrategy == "" {
		c.RebalanceStrategy = DefaultRebalanceStrategy
	}
	if c.ClientID == "" {
		c.ClientID = DefaultConfig().ClientID
	}
	return saramaConfigWith(c, tp, nil)
}

// clientConnFromEnv is the clientconf.Loader: the settings of
// clientConfigFromEnv, with sarama's configuration built and the
// dead-letter naming bound to them. OAUTHBEARER needs a token provider,
// which a tool has none of: it fails naming the setting.
func clientConnFromEnv(brokers []string) (clientconf.Conn, error) {
	c, err := clientConfigFromEnv(brokers)
	if err != nil {
		return clientconf.Conn{}, err
	}
	s, err := saramaClientConfig(c, nil)
	if err != nil {
		return clientconf.Conn{}, err
	}
	deadLetter := func(source, group string) string {
		named := c
		named.GroupID = group
		return named.DLQTopic(source)
	}
	return clientconf.Conn{Brokers: c.Brokers, Sarama: s, DeadLetter: deadLetter}, nil
}
