package producer

import (
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/envconf"
	"github.com/kafkaworker/kafkaworker/internal/kconn"
)

// Config is how a Producer reaches Kafka: the same KAFKA_* connection
// variables as worker.Config, read and checked by the same code, so a
// service that consumes and produces configures both once. Build it with
// ConfigFromEnv, or start from DefaultConfig and set fields. How the
// producer sends (idempotence, acks, retries, partitioner) is not
// configuration but its documented behaviour; WithSaramaConfig changes it.
type Config struct {
	// Brokers to bootstrap from, host:port. KAFKA_BROKERS, or its alias
	// KAFKA_BOOTSTRAP_SERVERS. Required.
	Brokers []string `env:"KAFKA_BROKERS"`
	// ClientID names this client in broker logs and quotas.
	// KAFKA_CLIENT_ID, default "kafkaworker".
	ClientID string `env:"KAFKA_CLIENT_ID" envDefault:"kafkaworker"`
	// Version is the broker protocol version, e.g. "3.6.0". KAFKA_VERSION,
	// default sarama's. The idempotent producer needs 0.11 or later.
	Version string `env:"KAFKA_VERSION"`
	// ConnectTimeout bounds how long New looks for a bootstrap broker that
	// answers, and then how long it waits for the producer to be ready,
	// before it gives up with an error naming the brokers and the last
	// failure. KAFKA_CONNECT_TIMEOUT, default 30s.
	ConnectTimeout time.Duration `env:"KAFKA_CONNECT_TIMEOUT" envDefault:"30s"`

	// TLSEnabled connects to the brokers over TLS. KAFKA_TLS_ENABLED,
	// default false; any other KAFKA_TLS_* variable implies it.
	TLSEnabled bool `env:"KAFKA_TLS_ENABLED"`
	// TLSCAFile is a PEM bundle of the CAs to trust for the brokers'
	// certificates. KAFKA_TLS_CA_FILE; empty means the system roots.
	TLSCAFile string `env:"KAFKA_TLS_CA_FILE"`
	// TLSCertFile and TLSKeyFile are this client's certificate and key, in
	// PEM, for mutual TLS: both or neither. KAFKA_TLS_CERT_FILE,
	// KAFKA_TLS_KEY_FILE.
	TLSCertFile string `env:"KAFKA_TLS_CERT_FILE"`
	TLSKeyFile  string `env:"KAFKA_TLS_KEY_FILE"`
	// TLSServerName overrides the name sent (SNI) and verified in the
	// brokers' certificates; default the host of each broker address.
	// KAFKA_TLS_SERVER_NAME.
	TLSServerName string `env:"KAFKA_TLS_SERVER_NAME"`
	// TLSInsecureSkipVerify accepts any broker certificate: for
	// development only; New logs a WARN. KAFKA_TLS_INSECURE_SKIP_VERIFY.
	TLSInsecureSkipVerify bool `env:"KAFKA_TLS_INSECURE_SKIP_VERIFY"`
	// SASLMechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER
	// (tokens from WithTokenProvider). KAFKA_SASL_MECHANISM; empty means
	// no SASL.
	SASLMechanism string `env:"KAFKA_SASL_MECHANISM"`
	// SASLUsername and SASLPassword are the SASL credentials.
	// KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD. The password is never
	// logged or printed: LogValue and String show [set].
	SASLUsername string `env:"KAFKA_SASL_USERNAME"`
	SASLPassword string `env:"KAFKA_SASL_PASSWORD"`
	// SASLPasswordFile is a file holding the password (one trailing line
	// break is dropped), e.g. a mounted secret; set it or SASLPassword, not
	// both. KAFKA_SASL_PASSWORD_FILE.
	SASLPasswordFile string `env:"KAFKA_SASL_PASSWORD_FILE"`
}

// DefaultConfig returns a Config with every documented default set and
// Brokers empty.
func DefaultConfig() Config {
	var c Config
	envconf.Defaults(&c)
	return c
}

// ConfigFromEnv reads the Config from the process environment and
// validates it, exactly as worker.ConfigFromEnv reads the same variables:
// a variable set to nothing is an error, never the default, and the error
// names every offending variable, the value it was given and what to do.
// Variables that are not a producer's (KAFKA_GROUP_ID, WORKER_*, ...) are
// ignored, so a worker's environment will do.
func ConfigFromEnv() (Config, error) {
	return configFrom(envconf.Environ(os.Environ()))
}

func configFrom(environ map[string]string) (Config, error) {
	var c Config
	problems, environ := envconf.Read(&c, environ, nil)
	conn := c.conn()
	problems = append(problems, conn.FinishEnv(environ)...)
	c.Brokers = conn.Brokers
	var validation []string
	if ve, ok := c.Validate().(*ValidationError); ok {
		validation = ve.Problems
	}
	if p := envconf.Merge(problems, validation); len(p) > 0 {
		return Config{}, &ValidationError{Problems: p}
	}
	return c, nil
}

// envVars lists every variable Config reads.
func envVars() []string {
	var out []string
	for name := range envconf.Vars(reflect.TypeFor[Config]()) {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// ValidationError lists every problem found in a Config, each naming the
// environment variable (and so the field) at fault.
type ValidationError struct {
	Problems []string
}

// Error lists the problems one per line.
func (e *ValidationError) Error() string {
	return "kafkaworker/producer: invalid configuration:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// Validate checks every field and returns a *ValidationError listing all
// problems at once, or nil. It cannot know the options: New also checks
// that OAUTHBEARER comes with WithTokenProvider.
func (c Config) Validate() error { return c.validate(true) }

func (c Config) validate(hasTokenProvider bool) error {
	var p []string
	c.conn().Validate(func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }, hasTokenProvider)
	if len(p) == 0 {
		return nil
	}
	slices.Sort(p)
	return &ValidationError{Problems: p}
}

// conn is c as internal/kconn checks it, shared with worker.Config.
func (c Config) conn() kconn.Conn {
	return kconn.Conn{
		Brokers: c.Brokers, ClientID: c.ClientID, Version: c.Version, ConnectTimeout: c.ConnectTimeout,
		Security: kconn.Security{
			TLSEnabled: c.TLSEnabled, TLSCAFile: c.TLSCAFile, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile,
			TLSServerName: c.TLSServerName, TLSInsecureSkipVerify: c.TLSInsecureSkipVerify,
			SASLMechanism: c.SASLMechanism, SASLUsername: c.SASLUsername, SASLPassword: c.SASLPassword, SASLPasswordFile: c.SASLPasswordFile,
		},
		TokenOption: "producer.WithTokenProvider",
	}
}

// LogValue lets a Config be logged with slog, from an allow-list, so the
// password shows as [set].
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers), slog.String("client_id", c.ClientID), slog.String("version", c.Version),
		slog.Duration("connect_timeout", c.ConnectTimeout),
		slog.GroupAttrs("security", c.conn().Security.LogAttrs()...),
	)
}

// String renders the same allow-listed fields as LogValue, so fmt's %v
// and %+v do not print credentials either.
func (c Config) String() string { return envconf.Render("producer.Config", c.LogValue().Group()) }

// GoString makes %#v print the same redacted form as String.
func (c Config) GoString() string { return c.String() }
