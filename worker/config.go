package worker

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/engine"
	"github.com/kafkaworker/kafkaworker/internal/envconf"
)

// Ordering says which messages must be handled one after another.
type Ordering string

const (
	// OrderByKey handles messages with the same key in the same partition
	// strictly in offset order, one at a time; different keys run
	// concurrently. Messages with a nil key are independent of each other.
	OrderByKey Ordering = "key"
	// OrderByPartition handles one message at a time per partition.
	OrderByPartition Ordering = "partition"
	// OrderNone handles messages in any order, concurrently.
	OrderNone Ordering = "none"
)

// engine is o as the engine takes it; o is valid (Validate checks).
func (o Ordering) engine() engine.Ordering {
	switch o {
	case OrderByPartition:
		return engine.OrderByPartition
	case OrderNone:
		return engine.OrderNone
	}
	return engine.OrderByKey
}

// RebalanceStrategy is how the group assigns partitions to its members.
type RebalanceStrategy string

// The strategies accepted by KAFKA_REBALANCE_STRATEGY.
const (
	StrategyCooperativeSticky RebalanceStrategy = "cooperative-sticky"
	StrategySticky            RebalanceStrategy = "sticky"
	StrategyRange             RebalanceStrategy = "range"
	StrategyRoundRobin        RebalanceStrategy = "roundrobin"
)

// InitialOffset is where a group with no committed offset starts.
type InitialOffset string

// The values accepted by KAFKA_INITIAL_OFFSET. ConfigFromEnv and Validate
// also take Kafka's names, "earliest" and "latest" (auto.offset.reset), for
// OffsetOldest and OffsetNewest.
const (
	OffsetOldest InitialOffset = "oldest"
	OffsetNewest InitialOffset = "newest"
)

// initialOffsetAliases maps Kafka's names for the initial offset to ours.
var initialOffsetAliases = map[InitialOffset]InitialOffset{"earliest": OffsetOldest, "latest": OffsetNewest}

// canonical is o with Kafka's aliases resolved.
func (o InitialOffset) canonical() InitialOffset {
	if a, ok := initialOffsetAliases[o]; ok {
		return a
	}
	return o
}

// Config is everything a worker needs that is not code. Build it with
// ConfigFromEnv, or start from DefaultConfig and set fields. A zero duration
// in the KAFKA_* group and metadata timeouts means sarama's default; every
// other field must be valid as documented, or Validate names it.
type Config struct {
	// Brokers to bootstrap from, host:port. KAFKA_BROKERS, or its alias
	// KAFKA_BOOTSTRAP_SERVERS. Required.
	Brokers []string `env:"KAFKA_BROKERS"`
	// GroupID is the consumer group. KAFKA_GROUP_ID. Required.
	GroupID string `env:"KAFKA_GROUP_ID"`
	// Topics to consume. KAFKA_TOPICS, comma-separated. Required.
	Topics []string `env:"KAFKA_TOPICS"`
	// ClientID names this client in broker logs and quotas. KAFKA_CLIENT_ID,
	// default "kafkaworker".
	ClientID string `env:"KAFKA_CLIENT_ID" envDefault:"kafkaworker"`
	// Version is the broker protocol version, e.g. "3.6.0". KAFKA_VERSION,
	// default sarama's (2.8.0).
	Version string `env:"KAFKA_VERSION"`
	// InitialOffset is where a group with no committed offset starts:
	// OffsetOldest or OffsetNewest ("earliest" and "latest" are accepted as
	// aliases). KAFKA_INITIAL_OFFSET, default "oldest", so a new group does
	// not skip what was produced before its first deploy.
	InitialOffset InitialOffset `env:"KAFKA_INITIAL_OFFSET" envDefault:"oldest"`
	// RebalanceStrategy is one of cooperative-sticky, sticky, range,
	// roundrobin. KAFKA_REBALANCE_STRATEGY, default DefaultRebalanceStrategy.
	RebalanceStrategy RebalanceStrategy `env:"KAFKA_REBALANCE_STRATEGY" envDefault:"cooperative-sticky"`
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the group
	// timeouts. KAFKA_SESSION_TIMEOUT, KAFKA_HEARTBEAT_INTERVAL,
	// KAFKA_REBALANCE_TIMEOUT; 0 means sarama's (10s, 3s, 60s).
	SessionTimeout    time.Duration `env:"KAFKA_SESSION_TIMEOUT"`
	HeartbeatInterval time.Duration `env:"KAFKA_HEARTBEAT_INTERVAL"`
	RebalanceTimeout  time.Duration `env:"KAFKA_REBALANCE_TIMEOUT"`
	// MetadataRefresh is how often metadata is refreshed, which is also how
	// soon partitions added to a subscribed topic are picked up.
	// KAFKA_METADATA_REFRESH; 0 means sarama's (10m).
	MetadataRefresh time.Duration `env:"KAFKA_METADATA_REFRESH"`
	// ConnectTimeout bounds how long Run looks for a bootstrap broker that
	// answers before it gives up with an error naming the brokers and the
	// last failure. KAFKA_CONNECT_TIMEOUT, default 30s.
	ConnectTimeout time.Duration `env:"KAFKA_CONNECT_TIMEOUT" envDefault:"30s"`
	// InstanceID turns on static membership (KIP-345), e.g. the pod name: a
	// restart within the session timeout does not rebalance. KAFKA_INSTANCE_ID.
	InstanceID string `env:"KAFKA_INSTANCE_ID"`

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
	// development only; Run logs a WARN. KAFKA_TLS_INSECURE_SKIP_VERIFY.
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

	// MetricsAddr is where the worker serves /metrics, /healthz and /readyz,
	// e.g. ":9090". METRICS_ADDR; empty (the default) serves nothing.
	MetricsAddr string `env:"METRICS_ADDR"`

	// Ordering is key, partition or none. WORKER_ORDERING, default key.
	Ordering Ordering `env:"WORKER_ORDERING" envDefault:"key"`
	// Concurrency is how many handler calls this worker runs at once,
	// shared by all its partitions: its pool's goroutines, and a partition's
	// own goroutine while it runs a fast handler's messages itself.
	// WORKER_CONCURRENCY, default 64.
	Concurrency int `env:"WORKER_CONCURRENCY" envDefault:"64"`
	// MaxInFlight bounds, per assigned partition, the messages taken from
	// Kafka and not yet committed-ready (queued, running, backing off, or done
	// but behind an unfinished earlier offset). When a partition reaches it,
	// the worker stops taking from that partition until its oldest message
	// finishes; other partitions are unaffected. WORKER_MAX_IN_FLIGHT,
	// default 1000.
	MaxInFlight int `env:"WORKER_MAX_IN_FLIGHT" envDefault:"1000"`
	// CommitInterval is how often ready offsets are committed.
	// WORKER_COMMIT_INTERVAL, default 1s. Revocation and shutdown also commit.
	CommitInterval time.Duration `env:"WORKER_COMMIT_INTERVAL" envDefault:"1s"`
	// ExactlyOnce commits, once per CommitInterval, in one Kafka
	// transaction: the output of the messages handled since the last commit
	// (Produce), their retry-tier and dead-letter forwards, and the source
	// offsets with their done-sets; the worker reads read_committed. A
	// crash, a fenced zombie or a refused commit aborts the transaction, and
	// its messages are handled again, so a read_committed reader of the
	// output sees each message's output exactly once. Needs Kafka 2.5 or
	// later (KIP-447). WORKER_EXACTLY_ONCE, default false. See the README
	// for its cost and what a cluster needs.
	ExactlyOnce bool `env:"WORKER_EXACTLY_ONCE" envDefault:"false"`
	// BatchMax is how many messages a batch handler (NewBatch) gets per
	// call at most; a batch holds one partition's messages.
	// WORKER_BATCH_MAX, default 100; must not exceed WORKER_MAX_IN_FLIGHT.
	// A Handler (New) ignores it.
	BatchMax int `env:"WORKER_BATCH_MAX" envDefault:"100"`
	// BatchWait is how long a ready message waits for a fuller batch: a
	// batch is handed over when BatchMax messages are ready, or BatchWait
	// after the first of them. 0 hands over what is ready at once.
	// WORKER_BATCH_WAIT, default 100ms. A Handler (New) ignores it.
	BatchWait time.Duration `env:"WORKER_BATCH_WAIT" envDefault:"100ms"`
	// StuckAfter is how long a message may run or wait in place before the
	// worker logs it as stuck (one WARN line per message, and an INFO line
	// when it finishes). WORKER_STUCK_AFTER, default 1m; 0 turns it off.
	StuckAfter time.Duration `env:"WORKER_STUCK_AFTER" envDefault:"1m"`
	// ShutdownTimeout is how long Run lets running handlers finish after its
	// context is cancelled. WORKER_SHUTDOWN_TIMEOUT, default 30s.
	ShutdownTimeout time.Duration `env:"WORKER_SHUTDOWN_TIMEOUT" envDefault:"30s"`

	// RetryBackoffInitial and RetryBackoffMax bound the exponential backoff
	// (with jitter) between in-place retries of a failing message.
	// RETRY_BACKOFF_INITIAL, default 100ms; RETRY_BACKOFF_MAX, default 5s.
	RetryBackoffInitial time.Duration `env:"RETRY_BACKOFF_INITIAL" envDefault:"100ms"`
	RetryBackoffMax     time.Duration `env:"RETRY_BACKOFF_MAX" envDefault:"5s"`
	// RetryLocalAttempts is how many deliveries a message gets in place
	// before it leaves for a retry topic (1 = none in place).
	// RETRY_LOCAL_ATTEMPTS, default 3.
	RetryLocalAttempts int `env:"RETRY_LOCAL_ATTEMPTS" envDefault:"3"`
	// RetryTopicDelays has one delay per retry tier; a message published to
	// tier n is handled again no earlier than that delay later. Set
	// RETRY_TOPIC_DELAYS to an empty value for no retry topics. Default
	// 10s,1m,10m.
	RetryTopicDelays []time.Duration `env:"RETRY_TOPIC_DELAYS" envDefault:"10s,1m,10m"`
	// RetryTopicTemplate names tier n's topic; {topic}, {group} and {n} are
	// replaced. RETRY_TOPIC_TEMPLATE, default {topic}.{group}.retry.{n}.
	RetryTopicTemplate string `env:"RETRY_TOPIC_TEMPLATE" envDefault:"{topic}.{group}.retry.{n}"`
	// DLQTopicTemplate names the dead-letter topic; {topic} and {group} are
	// replaced. DLQ_TOPIC_TEMPLATE, default {topic}.{group}.dlq.
	DLQTopicTemplate string `env:"DLQ_TOPIC_TEMPLATE" envDefault:"{topic}.{group}.dlq"`
	// DLQEnabled, when false, keeps retrying an exhausted message in place
	// forever instead of dead-lettering it. DLQ_ENABLED, default true.
	DLQEnabled bool `env:"DLQ_ENABLED" envDefault:"true"`
	// RetryCreateTopics creates missing retry and dead-letter topics at start,
	// with the source topic's partition count. RETRY_CREATE_TOPICS, default
	// true; when false, Run fails listing the missing topics.
	RetryCreateTopics bool `env:"RETRY_CREATE_TOPICS" envDefault:"true"`
}

// DefaultRebalanceStrategy is the strategy used when
// KAFKA_REBALANCE_STRATEGY is not set. See the README for why.
const DefaultRebalanceStrategy = StrategyCooperativeSticky

// DefaultConfig returns a Config with every documented default set and the
// required fields (Brokers, GroupID, Topics) empty.
func DefaultConfig() Config {
	var c Config
	// Parsing an empty environment applies exactly the envDefault tags, so
	// the defaults live in one place.
	envconf.Defaults(&c)
	return c
}

// ValidationError lists every problem found in a Config, each naming the
// environment variable (and so the field) at fault.
type ValidationError struct {
	Problems []string
}

// Error lists the problems one per line.
func (e *ValidationError) Error() string {
	return "kafkaworker: invalid configuration:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// Validate checks every field and returns a *ValidationError listing all
// problems at once, or nil.
func (c Config) Validate() error { return c.validate(true) }

// validate is Validate; hasTokenProvider says whether New was given
// WithTokenProvider (Validate, which sees no options, assumes so).
func (c Config) validate(hasTokenProvider bool) error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	// KAFKA_BROKERS, KAFKA_CLIENT_ID, KAFKA_VERSION, KAFKA_CONNECT_TIMEOUT,
	// KAFKA_TLS_* and KAFKA_SASL_*: the rules every client shares.
	c.conn().Validate(add, hasTokenProvider)
	if strings.TrimSpace(c.GroupID) == "" {
		add("KAFKA_GROUP_ID: missing: set the consumer group name")
	}
	if len(c.Topics) == 0 {
		add("KAFKA_TOPICS: missing: set a comma-separated list of topics to consume")
	}
	if o := c.InitialOffset.canonical(); o != OffsetOldest && o != OffsetNewest {
		add("KAFKA_INITIAL_OFFSET=%q: neither oldest nor newest (nor Kafka's earliest or latest): use oldest to start a new group at the oldest message, newest to start at the next one produced", c.InitialOffset)
	}
	if _, ok := strategies[c.RebalanceStrategy]; !ok {
		add("KAFKA_REBALANCE_STRATEGY=%q: unknown strategy: use one of %s", c.RebalanceStrategy, strings.Join(strategyNames(), ", "))
	}
	for name, d := range map[string]time.Duration{
		"KAFKA_SESSION_TIMEOUT": c.SessionTimeout, "KAFKA_HEARTBEAT_INTERVAL": c.HeartbeatInterval,
		"KAFKA_REBALANCE_TIMEOUT": c.RebalanceTimeout, "KAFKA_METADATA_REFRESH": c.MetadataRefresh,
	} {
		if d < 0 {
			add("%s=%v: negative: use a positive duration, or leave it unset for sarama's default", name, d)
		}
	}
	c.validateGroupTimeouts(add)
	switch c.Ordering {
	case OrderByKey, OrderByPartition, OrderNone:
	default:
		add("WORKER_ORDERING=%q: unknown ordering: use key, partition or none", c.Ordering)
	}
	if c.Concurrency < 1 {
		add("WORKER_CONCURRENCY=%d: must be at least 1", c.Concurrency)
	}
	if c.StuckAfter < 0 {
		add("WORKER_STUCK_AFTER=%v: negative: use a positive duration, or 0 to turn stuck-message logging off", c.StuckAfter)
	}
	if c.MaxInFlight < 1 {
		add("WORKER_MAX_IN_FLIGHT=%d: must be at least 1", c.MaxInFlight)
	}
	if c.BatchMax < 1 {
		add("WORKER_BATCH_MAX=%d: must be at least 1", c.BatchMax)
	}
	if c.BatchWait < 0 {
		add("WORKER_BATCH_WAIT=%v: negative: use a positive duration, or 0 to hand over what is ready at once", c.BatchWait)
	}
	if c.ExactlyOnce && c.CommitInterval > maxTxnCommitInterval {
		add("WORKER_COMMIT_INTERVAL=%v with WORKER_EXACTLY_ONCE=true: a transaction stays open for a commit interval, and the worker asks for a timeout of three of them, which Kafka's transaction.max.timeout.ms (15m by default) must allow: use %v or less", c.CommitInterval, maxTxnCommitInterval)
	}
	if v, err := sarama.ParseKafkaVersion(c.Version); c.ExactlyOnce && c.Version != "" && err == nil && !v.IsAtLeast(sarama.V2_5_0_0) {
		add("WORKER_EXACTLY_ONCE=true with KAFKA_VERSION=%q: transactions that fence a zombie member need Kafka 2.5 or later (KIP-447): raise KAFKA_VERSION, or turn exactly-once off", c.Version)
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"WORKER_COMMIT_INTERVAL", c.CommitInterval}, {"WORKER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"RETRY_BACKOFF_INITIAL", c.RetryBackoffInitial}, {"RETRY_BACKOFF_MAX", c.RetryBackoffMax},
	}
	for _, x := range positive {
		if x.d <= 0 {
			add("%s=%v: must be a positive duration", x.name, x.d)
		}
	}
	if c.RetryLocalAttempts < 1 {
		add("RETRY_LOCAL_ATTEMPTS=%d: must be at least 1 (1 means no retry in place)", c.RetryLocalAttempts)
	}
	for i, d := range c.RetryTopicDelays {
		if d <= 0 {
			add("RETRY_TOPIC_DELAYS=%v: tier %d delay %v: must be positive", c.RetryTopicDelays, i+1, d)
		}
	}
	if len(c.RetryTopicDelays) > 0 && !strings.Contains(c.RetryTopicTemplate, "{n}") {
		add("RETRY_TOPIC_TEMPLATE=%q: has no {n}: each tier needs its own topic", c.RetryTopicTemplate)
	}
	if c.RetryTopicTemplate == "" {
		add("RETRY_TOPIC_TEMPLATE: empty: leave it unset for {topic}.{group}.retry.{n}")
	}
	if c.DLQTopicTemplate == "" {
		add("DLQ_TOPIC_TEMPLATE: empty: leave it unset for {topic}.{group}.dlq")
	}
	if c.RetryBackoffInitial > 0 && c.RetryBackoffMax > 0 && c.RetryBackoffMax < c.RetryBackoffInitial {
		add("RETRY_BACKOFF_MAX=%v: below RETRY_BACKOFF_INITIAL (%v): raise it or lower RETRY_BACKOFF_INITIAL", c.RetryBackoffMax, c.RetryBackoffInitial)
	}
	if len(p) == 0 {
		return nil
	}
	slices.Sort(p)
	return &ValidationError{Problems: p}
}

// validateGroupTimeouts checks that the heartbeat interval in force is
// below the session timeout in force, naming the variables the user set
// and sarama's default for the one not set.
func (c Config) validateGroupTimeouts(add func(string, ...any)) {
	def := sarama.NewConfig().Consumer.Group
	session, heartbeat := cmp.Or(c.SessionTimeout, def.Session.Timeout), cmp.Or(c.HeartbeatInterval, def.Heartbeat.Interval)
	if c.SessionTimeout < 0 || c.HeartbeatInterval < 0 || heartbeat < session {
		return
	}
	switch {
	case c.SessionTimeout > 0 && c.HeartbeatInterval > 0:
		add("KAFKA_HEARTBEAT_INTERVAL=%v: must be below KAFKA_SESSION_TIMEOUT (%v), typically a third of it", heartbeat, session)
	case c.HeartbeatInterval > 0:
		add("KAFKA_HEARTBEAT_INTERVAL=%v: must be below the session timeout, which is %v (sarama's default: KAFKA_SESSION_TIMEOUT is not set): "+
			"lower it to about a third of that, or set KAFKA_SESSION_TIMEOUT to about three times it", heartbeat, session)
	default:
		add("KAFKA_SESSION_TIMEOUT=%v: must be above the heartbeat interval, which is %v (sarama's default: KAFKA_HEARTBEAT_INTERVAL is not set): "+
			"raise it, or set KAFKA_HEARTBEAT_INTERVAL to about a third of it", session, heartbeat)
	}
}

var strategies = map[RebalanceStrategy]func() sarama.BalanceStrategy{
	StrategyCooperativeSticky: sarama.NewBalanceStrategyCooperativeSticky,
	StrategySticky:            sarama.NewBalanceStrategySticky,
	StrategyRange:             sarama.NewBalanceStrategyRange,
	StrategyRoundRobin:        sarama.NewBalanceStrategyRoundRobin,
}

func strategyNames() []string {
	names := make([]string, 0, len(strategies))
	for n := range strategies {
		names = append(names, string(n))
	}
	slices.Sort(names)
	return names
}
