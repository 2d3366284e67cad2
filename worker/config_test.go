package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/retry"
)

func validEnv() map[string]string {
	return map[string]string{
		"KAFKA_BROKERS":  "localhost:9092,localhost:9093",
		"KAFKA_GROUP_ID": "billing",
		"KAFKA_TOPICS":   "orders, payments",
	}
}

func TestConfigFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := configFrom(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Brokers = []string{"localhost:9092", "localhost:9093"}
	want.GroupID = "billing"
	want.Topics = []string{"orders", "payments"}
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", c, want)
	}
	if c.Ordering != OrderByKey || c.Concurrency != 64 || c.MaxInFlight != 1000 ||
		c.CommitInterval != time.Second || c.ShutdownTimeout != 30*time.Second ||
		c.InitialOffset != "oldest" || c.ClientID != "kafkaworker" || c.RebalanceStrategy != DefaultRebalanceStrategy ||
		c.ConnectTimeout != 30*time.Second {
		t.Fatalf("documented defaults not applied: %+v", c)
	}
}

func TestConfigFromEnvReadsEveryVariable(t *testing.T) {
	t.Parallel()
	env := validEnv()
	for k, v := range map[string]string{
		"KAFKA_CLIENT_ID": "billing-7", "KAFKA_VERSION": "3.6.0", "KAFKA_INITIAL_OFFSET": "newest",
		"KAFKA_REBALANCE_STRATEGY": "cooperative-sticky", "KAFKA_SESSION_TIMEOUT": "45s",
		"KAFKA_HEARTBEAT_INTERVAL": "3s", "KAFKA_REBALANCE_TIMEOUT": "2m", "KAFKA_INSTANCE_ID": "pod-3",
		"KAFKA_METADATA_REFRESH": "30s", "KAFKA_CONNECT_TIMEOUT": "5s", "WORKER_ORDERING": "partition", "WORKER_CONCURRENCY": "8",
		"WORKER_MAX_IN_FLIGHT": "50", "WORKER_COMMIT_INTERVAL": "250ms", "WORKER_SHUTDOWN_TIMEOUT": "1m",
		"RETRY_BACKOFF_INITIAL": "1s", "RETRY_BACKOFF_MAX": "1m",
	} {
		env[k] = v
	}
	c, err := configFrom(env)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientID != "billing-7" || c.Version != "3.6.0" || c.InitialOffset != "newest" ||
		c.RebalanceStrategy != StrategyCooperativeSticky || c.SessionTimeout != 45*time.Second ||
		c.HeartbeatInterval != 3*time.Second || c.RebalanceTimeout != 2*time.Minute || c.InstanceID != "pod-3" ||
		c.MetadataRefresh != 30*time.Second || c.ConnectTimeout != 5*time.Second || c.Ordering != OrderByPartition || c.Concurrency != 8 ||
		c.MaxInFlight != 50 || c.CommitInterval != 250*time.Millisecond || c.ShutdownTimeout != time.Minute ||
		c.RetryBackoffInitial != time.Second || c.RetryBackoffMax != time.Minute {
		t.Fatalf("not every variable was read: %+v", c)
	}
	s, err := saramaConfig(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Consumer.Offsets.Initial != sarama.OffsetNewest || s.Consumer.Group.Session.Timeout != 45*time.Second ||
		s.Consumer.Group.InstanceId != "pod-3" || s.Metadata.RefreshFrequency != 30*time.Second ||
		s.Consumer.Offsets.AutoCommit.Enable || s.Version.String() != "3.6.0" ||
		s.Consumer.Group.Rebalance.GroupStrategies[0].Name() != "cooperative-sticky" {
		t.Fatalf("sarama config does not follow Config: %+v", s.Consumer)
	}
}

func TestConfigBootstrapServersAlias(t *testing.T) {
	t.Parallel()
	env := validEnv()
	delete(env, "KAFKA_BROKERS")
	env["KAFKA_BOOTSTRAP_SERVERS"] = "kafka-0:9092"
	c, err := configFrom(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Brokers) != 1 || c.Brokers[0] != "kafka-0:9092" {
		t.Fatalf("alias not used: %v", c.Brokers)
	}

	env["KAFKA_BROKERS"] = "other:9092"
	_, err = configFrom(env)
	wantProblems(t, err, "KAFKA_BROKERS=\"other:9092\" and KAFKA_BOOTSTRAP_SERVERS=\"kafka-0:9092\" disagree")
}

func TestConfigErrorsNameEveryOffendingVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"all required missing", map[string]string{},
			[]string{"KAFKA_BROKERS: missing", "KAFKA_GROUP_ID: missing", "KAFKA_TOPICS: missing"}},
		{"unparsable values", merge(validEnv(), map[string]string{
			"KAFKA_SESSION_TIMEOUT": "ten seconds", "WORKER_CONCURRENCY": "lots", "WORKER_COMMIT_INTERVAL": "5",
			"KAFKA_CONNECT_TIMEOUT": "soon",
		}), []string{
			`KAFKA_SESSION_TIMEOUT="ten seconds": cannot parse as a Go duration`, `KAFKA_CONNECT_TIMEOUT="soon": cannot parse as a Go duration`,
			`WORKER_CONCURRENCY="lots": cannot parse as a whole number`,
			`WORKER_COMMIT_INTERVAL="5": cannot parse as a Go duration`,
		}},
		{"out of range values", merge(validEnv(), map[string]string{
			"WORKER_ORDERING": "random", "WORKER_CONCURRENCY": "0", "WORKER_MAX_IN_FLIGHT": "-1",
			"KAFKA_INITIAL_OFFSET": "first", "KAFKA_REBALANCE_STRATEGY": "fair", "KAFKA_VERSION": "banana",
			"WORKER_SHUTDOWN_TIMEOUT": "-1s", "KAFKA_BROKERS": "localhost", "KAFKA_CONNECT_TIMEOUT": "0",
		}), []string{
			"KAFKA_CONNECT_TIMEOUT=0s: must be a positive duration",
			`WORKER_ORDERING="random": unknown ordering`, "WORKER_CONCURRENCY=0: must be at least 1",
			"WORKER_MAX_IN_FLIGHT=-1: must be at least 1", `KAFKA_INITIAL_OFFSET="first": neither oldest nor newest`,
			`KAFKA_REBALANCE_STRATEGY="fair": unknown strategy`, `KAFKA_VERSION="banana": not a Kafka version`,
			"WORKER_SHUTDOWN_TIMEOUT=-1s: must be a positive duration", `KAFKA_BROKERS: "localhost" is not host:port`,
		}},
		{"inconsistent timeouts", merge(validEnv(), map[string]string{
			"KAFKA_SESSION_TIMEOUT": "3s", "KAFKA_HEARTBEAT_INTERVAL": "5s",
			"RETRY_BACKOFF_INITIAL": "10s", "RETRY_BACKOFF_MAX": "1s",
		}), []string{"KAFKA_HEARTBEAT_INTERVAL=5s: must be below KAFKA_SESSION_TIMEOUT (3s)", "RETRY_BACKOFF_MAX=1s: below RETRY_BACKOFF_INITIAL (10s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := configFrom(tc.env)
			wantProblems(t, err, tc.want...)
		})
	}
}

func TestConfigParseErrorIsNotRepeatedAsRangeError(t *testing.T) {
	t.Parallel()
	_, err := configFrom(merge(validEnv(), map[string]string{"WORKER_CONCURRENCY": "lots"}))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 {
		t.Fatalf("want exactly one problem for one bad variable, got %v", err)
	}
}

func TestConfigNeverPrintsSecrets(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Brokers = []string{"b:9092"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if !strings.Contains(s, "brokers=[b:9092]") || strings.Contains(s, "RetryBackoff") {
			t.Fatalf("Config prints through its allow-list only; got %s", s)
		}
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("cfg", slog.Any("config", c))
	if !strings.Contains(b.String(), "config.concurrency=64") || !strings.Contains(b.String(), "config.connect_timeout=30s") {
		t.Fatalf("LogValue not used by slog: %s", b.String())
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	c, err := configFrom(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), "handler is nil") {
		t.Fatalf("nil handler: %v", err)
	}
	if _, err := New(Config{}, h); err == nil || !strings.Contains(err.Error(), "WORKER_CONCURRENCY") {
		t.Fatalf("zero Config: %v", err)
	}
	_, err = New(c, h, WithSaramaConfig(func(s *sarama.Config) { s.Consumer.Offsets.AutoCommit.Enable = true }))
	if err == nil || !strings.Contains(err.Error(), "AutoCommit.Enable") {
		t.Fatalf("hook turning on sarama's auto-commit: %v", err)
	}
	_, err = New(c, h, WithSaramaConfig(func(s *sarama.Config) { s.Consumer.Fetch.Default = 0 }))
	if err == nil || !strings.Contains(err.Error(), "sarama configuration") {
		t.Fatalf("hook producing an invalid sarama config: %v", err)
	}
	w, err := New(c, h)
	if err != nil {
		t.Fatal(err)
	}
	if w.Config().GroupID != "billing" {
		t.Fatal("Config() does not return the configuration")
	}
}

func merge(a, b map[string]string) map[string]string {
	for k, v := range b {
		a[k] = v
	}
	return a
}

func wantProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a *ValidationError, got %T: %v", err, err)
	}
	for _, w := range want {
		found := false
		for _, p := range ve.Problems {
			found = found || strings.Contains(p, w)
		}
		if !found {
			t.Errorf("no problem mentions %q; got:\n%v", w, err)
		}
	}
}

func TestRunReportsUnreachableBrokers(t *testing.T) {
	t.Parallel()
	c, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_BROKERS": "127.0.0.1:1", "KAFKA_CONNECT_TIMEOUT": "300ms"}))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(c, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }),
		WithLogger(slog.New(slog.DiscardHandler)),
		WithSaramaConfig(func(s *sarama.Config) { s.Metadata.Retry.Max = 0 }))
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no broker answered within 300ms (KAFKA_CONNECT_TIMEOUT) at [127.0.0.1:1]") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Run against an unreachable broker: %v, want an error naming the brokers, the timeout and the last error", err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "Run called twice") {
		t.Fatalf("second Run: %v", err)
	}
}

func TestConfigRetrySettings(t *testing.T) {
	t.Parallel()
	c, err := configFrom(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	if c.RetryLocalAttempts != 3 || fmt.Sprint(c.RetryTopicDelays) != "[10s 1m0s 10m0s]" || !c.DLQEnabled ||
		!c.RetryCreateTopics || c.RetryTopicTemplate != "{topic}.{group}.retry.{n}" || c.DLQTopicTemplate != "{topic}.{group}.dlq" {
		t.Fatalf("retry defaults not applied: %+v", c)
	}

	c, err = configFrom(merge(validEnv(), map[string]string{
		"RETRY_TOPIC_DELAYS": "", "DLQ_ENABLED": "false", "RETRY_CREATE_TOPICS": "false", "RETRY_LOCAL_ATTEMPTS": "1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RetryTopicDelays) != 0 || c.DLQEnabled || c.RetryCreateTopics || c.RetryLocalAttempts != 1 {
		t.Fatalf("RETRY_TOPIC_DELAYS set empty must mean no tiers; got %+v", c)
	}

	_, err = configFrom(merge(validEnv(), map[string]string{
		"RETRY_TOPIC_DELAYS": "10s,soon", "RETRY_LOCAL_ATTEMPTS": "0", "DLQ_ENABLED": "maybe",
	}))
	wantProblems(t, err, `RETRY_TOPIC_DELAYS="10s,soon": cannot parse as a comma-separated list of Go durations`,
		"RETRY_LOCAL_ATTEMPTS=0: must be at least 1", `DLQ_ENABLED="maybe": cannot parse as true or false`)

	_, err = configFrom(merge(validEnv(), map[string]string{"RETRY_TOPIC_DELAYS": "10s,-1s", "RETRY_TOPIC_TEMPLATE": "{topic}.retry"}))
	wantProblems(t, err, "RETRY_TOPIC_DELAYS=[10s -1s]: tier 2 delay -1s: must be positive", `RETRY_TOPIC_TEMPLATE="{topic}.retry": has no {n}`)
}

func TestTopologyNamesAndPolicy(t *testing.T) {
	t.Parallel()
	c, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_TOPICS": "orders", "RETRY_TOPIC_DELAYS": "1s,1m"}))
	if err != nil {
		t.Fatal(err)
	}
	topo := c.topology()
	if got := fmt.Sprint(topo.Consumed()); got != "[orders orders.billing.retry.1 orders.billing.retry.2]" {
		t.Fatalf("consumed topics %s", got)
	}
	f := c.retryPolicy(topo)
	now := time.Now()
	src, tier2 := topo.Hop("orders"), topo.Hop("orders.billing.retry.2")
	if d := f.Next(src, 2, errors.New("x"), now); d != nil {
		t.Fatalf("attempt 2 of 3 must retry in place, got %+v", d)
	}
	if d := f.Next(src, 3, errors.New("x"), now); d == nil || d.Topic != "orders.billing.retry.1" || !d.NotBefore.Equal(now.Add(time.Second)) {
		t.Fatalf("after 3 local attempts: tier 1 due in 1s, got %+v", d)
	}
	if d := f.Next(tier2, 3, errors.New("x"), now); d == nil || d.Topic != "orders.billing.dlq" || !d.DeadLetter {
		t.Fatalf("exhausted on the last tier: dead letter, got %+v", d)
	}
	if d := f.Next(src, 1, retry.Permanent(errors.New("x")), now); d == nil || !d.DeadLetter {
		t.Fatalf("permanent: dead letter at once, got %+v", d)
	}
	c.DLQEnabled = false
	f = c.retryPolicy(c.topology())
	if d := f.Next(tier2, 3, retry.Permanent(errors.New("x")), now); d != nil {
		t.Fatalf("no dead-letter topic: keep retrying in place, never drop; got %+v", d)
	}
}
