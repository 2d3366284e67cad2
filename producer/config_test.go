package producer

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

func wantProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a *ValidationError", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q:\n%v", w, err)
		}
	}
}

func TestConfigFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := configFrom(map[string]string{"KAFKA_BROKERS": " a:9092, b:9092 ", "KAFKA_GROUP_ID": "", "WORKER_CONCURRENCY": "lots"})
	if err != nil {
		t.Fatalf("a worker's variables are not a producer's problem: %v", err)
	}
	if fmt.Sprint(c.Brokers) != "[a:9092 b:9092]" || c.ClientID != "kafkaworker" || c.ConnectTimeout != 30*time.Second || c.Version != "" {
		t.Fatalf("defaults: %v", c)
	}
	if d := DefaultConfig(); d.ClientID != "kafkaworker" || d.ConnectTimeout != 30*time.Second || d.Brokers != nil {
		t.Fatalf("DefaultConfig: %v", d)
	}
	c, err = configFrom(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_CLIENT_ID": "billing", "KAFKA_VERSION": "3.6.0", "KAFKA_CONNECT_TIMEOUT": "5s"})
	if err != nil || fmt.Sprint(c.Brokers) != "[k:9092]" || c.ClientID != "billing" || c.Version != "3.6.0" || c.ConnectTimeout != 5*time.Second {
		t.Fatalf("every variable read: %v, %v", c, err)
	}
}

// Every variable set to nothing is an error naming it, never the default.
func TestConfigSetButEmptyIsAnError(t *testing.T) {
	t.Parallel()
	for _, name := range envVars() {
		env := map[string]string{"KAFKA_BROKERS": "a:9092", name: " "}
		if name == "KAFKA_BROKERS" {
			env = map[string]string{name: ""}
		}
		_, err := configFrom(env)
		wantProblems(t, err, fmt.Sprintf("%s=%q: set but empty", name, env[name]))
		if n := len(err.(*ValidationError).Problems); n != 1 {
			t.Errorf("%s set empty: want one problem, got %v", name, err)
		}
	}
}

func TestConfigErrorsNameEveryVariable(t *testing.T) {
	t.Parallel()
	_, err := configFrom(map[string]string{
		"KAFKA_BROKERS": "localhost", "KAFKA_BOOTSTRAP_SERVERS": "other:9092", "KAFKA_CONNECT_TIMEOUT": "soon",
		"KAFKA_VERSION": "banana", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_TLS_CA_FILE": "/nonexistent/ca.pem",
	})
	wantProblems(t, err,
		`KAFKA_BROKERS="localhost" and KAFKA_BOOTSTRAP_SERVERS="other:9092" disagree: set one of them`,
		`KAFKA_CONNECT_TIMEOUT="soon": cannot parse as a Go duration`,
		`KAFKA_VERSION="banana": not a Kafka version`,
		"KAFKA_SASL_USERNAME: missing: KAFKA_SASL_MECHANISM=PLAIN needs a user name",
		"KAFKA_TLS_CA_FILE: cannot read it",
	)
	_, err = configFrom(map[string]string{})
	wantProblems(t, err, "KAFKA_BROKERS: missing: set it to a comma-separated list of host:port")
	_, err = New(Config{Brokers: []string{"a:9092"}, ClientID: "x", ConnectTimeout: time.Second, SASLMechanism: "OAUTHBEARER"})
	wantProblems(t, err, "KAFKA_SASL_MECHANISM: OAUTHBEARER takes its tokens from code: pass producer.WithTokenProvider to New")
	_, err = New(Config{Brokers: []string{"a:9092"}})
	wantProblems(t, err, `KAFKA_CLIENT_ID: empty`, "KAFKA_CONNECT_TIMEOUT=0s: must be a positive duration")
}

func TestConfigNeverPrintsPassword(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-Quux-91"
	c := DefaultConfig()
	c.Brokers, c.SASLMechanism, c.SASLUsername, c.SASLPassword = []string{"b:9092"}, "PLAIN", "svc", pw
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("cfg", slog.Any("config", c))
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), b.String()} {
		if strings.Contains(s, pw) || !strings.Contains(s, "[set]") || !strings.Contains(s, "svc") {
			t.Fatalf("want the user name and [set] for the password: %s", s)
		}
	}
	_, err := configFrom(map[string]string{"KAFKA_BROKERS": "a:9092", "KAFKA_SASL_PASSWORD": pw, "KAFKA_SASL_PASSWORD_FILE": "/x"})
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("validation error must not hold the password: %v", err)
	}
}

// The public metric names are exactly the producer's table.
func TestPublicMetricNamesAreTheTables(t *testing.T) {
	t.Parallel()
	public := []string{MetricSent, MetricErrors, MetricSendDuration}
	table := metricdef.ProducerNames()
	slices.Sort(public)
	slices.Sort(table)
	if !slices.Equal(public, table) {
		t.Fatalf("producer's Metric* constants %v differ from the table %v", public, table)
	}
}
