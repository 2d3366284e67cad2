package kconn

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/envconf"
)

// Conn is the connection settings every client in this module reads from
// the same KAFKA_* variables: the bootstrap brokers, the client id, the
// protocol version, the connect timeout, TLS and SASL. worker.Config and
// producer.Config each declare these fields (with their env tags) and hand
// them here, so the rules, the checks and the error texts are one: read
// them with envconf.Read, finish them with FinishEnv, check them with
// Validate, build sarama's configuration with Sarama.
type Conn struct {
	Brokers        []string      // KAFKA_BROKERS, or its alias KAFKA_BOOTSTRAP_SERVERS
	ClientID       string        // KAFKA_CLIENT_ID
	Version        string        // KAFKA_VERSION; "" for sarama's
	ConnectTimeout time.Duration // KAFKA_CONNECT_TIMEOUT
	Security       Security      // KAFKA_TLS_*, KAFKA_SASL_*
	// TokenOption names the option that supplies OAUTHBEARER tokens, as
	// the problem about a missing one tells the user to pass it, e.g.
	// "worker.WithTokenProvider".
	TokenOption string
}

// DefaultClientID is KAFKA_CLIENT_ID's default.
const DefaultClientID = "kafkaworker"

// FinishEnv completes the reading of c from environ, after envconf.Read
// parsed the struct that holds it: KAFKA_BOOTSTRAP_SERVERS stands for
// KAFKA_BROKERS when that is unset (both set and different is a problem),
// the broker list is trimmed, and KAFKA_TLS_ENABLED=false with other
// KAFKA_TLS_* variables set is a problem. It returns the problems.
func (c *Conn) FinishEnv(environ map[string]string) []string {
	var problems []string
	alias := strings.TrimSpace(environ["KAFKA_BOOTSTRAP_SERVERS"])
	primary := strings.TrimSpace(environ["KAFKA_BROKERS"])
	switch {
	case alias != "" && primary != "" && alias != primary:
		problems = append(problems, fmt.Sprintf("KAFKA_BROKERS=%q and KAFKA_BOOTSTRAP_SERVERS=%q disagree: set one of them", primary, alias))
	case alias != "" && primary == "":
		c.Brokers = strings.Split(alias, ",")
	}
	c.Brokers = envconf.TrimList(c.Brokers)
	if v, ok := environ["KAFKA_TLS_ENABLED"]; ok && c.Security.TLSOn() && !c.Security.TLSEnabled && strings.TrimSpace(v) != "" {
		problems = append(problems, fmt.Sprintf("KAFKA_TLS_ENABLED=%q, but other KAFKA_TLS_* variables are set, which turn TLS on: unset one or the other", v))
	}
	return problems
}

// Validate appends a problem for every bad connection setting, each
// naming its variable and saying what to do. hasTokenProvider says whether
// the OAUTHBEARER token option was given.
func (c Conn) Validate(add func(string, ...any), hasTokenProvider bool) {
	if len(c.Brokers) == 0 {
		add("KAFKA_BROKERS: missing: set it to a comma-separated list of host:port, e.g. localhost:9092")
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			add("KAFKA_BROKERS: %q is not host:port: list the brokers as host:port, comma-separated", b)
		}
	}
	if c.ClientID == "" {
		add("KAFKA_CLIENT_ID: empty: set a client id or leave the variable unset for %q", DefaultClientID)
	}
	if c.Version != "" {
		if _, err := sarama.ParseKafkaVersion(c.Version); err != nil {
			add("KAFKA_VERSION=%q: not a Kafka version such as 3.6.0: %v", c.Version, err)
		}
	}
	if c.ConnectTimeout <= 0 {
		add("%s=%v: must be a positive duration", "KAFKA_CONNECT_TIMEOUT", c.ConnectTimeout)
	}
	c.Security.validate(add, hasTokenProvider, c.TokenOption)
}

// Sarama is the sarama configuration of a plain client of the cluster c
// names: client id, protocol version, TLS and SASL (tp supplies OAUTHBEARER
// tokens), and automatic topic creation off, so a mistyped topic name is an
// error rather than a new topic. The caller adjusts what its own use needs;
// SaramaConfig builds the worker's from it.
func (c Conn) Sarama(tp sarama.AccessTokenProvider) (*sarama.Config, error) {
	s := sarama.NewConfig()
	s.ClientID = c.ClientID
	if c.Version != "" {
		v, err := sarama.ParseKafkaVersion(c.Version)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_VERSION: %w", err)
		}
		s.Version = v
	}
	s.Metadata.AllowAutoTopicCreation = false
	if err := c.Security.Apply(s, tp); err != nil {
		return nil, fmt.Errorf("kafkaworker: %w", err)
	}
	return s, nil
}

// Warnings are the settings that weaken security, one line each, for a
// client to log when it starts: skipping certificate verification, and a
// PLAIN password sent without TLS.
func (c Security) Warnings() []string {
	var out []string
	if c.TLSInsecureSkipVerify {
		out = append(out, "KAFKA_TLS_INSECURE_SKIP_VERIFY=true: the broker's certificate is not verified, so anyone on the path can impersonate it; use this in development only")
	}
	if c.Mechanism() == SASLPlain && !c.TLSOn() {
		out = append(out, "KAFKA_SASL_MECHANISM=PLAIN without TLS: the password crosses the network in cleartext; set KAFKA_TLS_ENABLED=true")
	}
	return out
}

// LogAttrs are the TLS and SASL settings for a log line or a String
// method: paths and names, and [set] for the password.
func (c Security) LogAttrs() []slog.Attr {
	pw := ""
	if c.SASLPassword != "" {
		pw = "[set]"
	}
	return []slog.Attr{
		slog.Bool("tls_enabled", c.TLSOn()), slog.String("tls_ca_file", c.TLSCAFile),
		slog.String("tls_cert_file", c.TLSCertFile), slog.String("tls_key_file", c.TLSKeyFile),
		slog.String("tls_server_name", c.TLSServerName), slog.Bool("tls_insecure_skip_verify", c.TLSInsecureSkipVerify),
		slog.String("sasl_mechanism", c.SASLMechanism), slog.String("sasl_username", c.SASLUsername),
		slog.String("sasl_password", pw), slog.String("sasl_password_file", c.SASLPasswordFile),
	}
}
