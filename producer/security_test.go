package producer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// Over TLS with a SCRAM login whose password comes from a file, the
// producer sends; its logs never hold the password.
func TestSendOverTLSAndSASL(t *testing.T) {
	t.Parallel()
	const pw = "s3cret-Xyzzy-42"
	c, err := kafkatest.NewCluster(kafkatest.WithTLS(), kafkatest.WithSASL("SCRAM-SHA-512", "svc", pw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.CreateTopic(testCtx(t), "secure", 1); err != nil {
		t.Fatal(err)
	}
	ca, err := c.CAFile()
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configFrom(map[string]string{
		"KAFKA_BROKERS": strings.Join(c.Addrs(), ","), "KAFKA_TLS_CA_FILE": ca, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD_FILE": pwFile, "KAFKA_CONNECT_TIMEOUT": "10s",
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Logs{}
	p, err := New(cfg, WithLogger(logs.Logger()), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Send(testCtx(t), &Message{Topic: "secure", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range logs.Records() {
		line := r.Message + fmt.Sprint(testutil.Attrs(r))
		if strings.Contains(line, pw) {
			t.Fatalf("the password was logged: %s", line)
		}
	}

	// A wrong password fails New at once, naming the settings to check.
	cfg.SASLPasswordFile, cfg.SASLPassword = "", "wrong"
	start := time.Now()
	_, err = New(cfg, WithLogger(logs.Logger()), WithRegisterer(prometheus.NewRegistry()))
	if err == nil || !strings.Contains(err.Error(), "KAFKA_SASL_USERNAME") || time.Since(start) > 5*time.Second {
		t.Fatalf("wrong password: %v after %v", err, time.Since(start))
	}
}

type staticToken struct{}

func (staticToken) Token() (*sarama.AccessToken, error) { return &sarama.AccessToken{Token: "t"}, nil }

// The producer's sarama configuration: its defaults, OAUTHBEARER with the
// token option, hooks applied last and the settings it relies on checked.
func TestSaramaConfig(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"a:9092"}
	build := func(c Config, o options) (*sarama.Config, error) {
		return (&Producer{cfg: c}).saramaConfig(o)
	}
	s, err := build(cfg, options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Producer.Idempotent || s.Producer.RequiredAcks != sarama.WaitForAll || s.Net.MaxOpenRequests != 1 || s.Producer.Retry.Max != 10 ||
		s.Metadata.AllowAutoTopicCreation || s.ClientID != "kafkaworker" {
		t.Fatalf("defaults not applied: %+v", s.Producer)
	}
	cfg.SASLMechanism = "OAUTHBEARER"
	s, err = build(cfg, options{tokenProvider: staticToken{}})
	if err != nil || s.Net.SASL.Mechanism != sarama.SASLTypeOAuth || s.Net.SASL.TokenProvider == nil {
		t.Fatalf("OAUTHBEARER: %v", err)
	}
	cfg.SASLMechanism = ""
	_, err = build(cfg, options{saramaHooks: []func(*sarama.Config){func(s *sarama.Config) { s.Producer.Return.Successes = false }}})
	if err == nil || !strings.Contains(err.Error(), "Producer.Return.Successes") {
		t.Fatalf("a hook turning successes off: %v", err)
	}
	s, err = build(cfg, options{saramaHooks: []func(*sarama.Config){func(s *sarama.Config) { s.Producer.Idempotent = false; s.Producer.RequiredAcks = sarama.WaitForLocal }}})
	if err != nil || s.Producer.Idempotent || s.Producer.RequiredAcks != sarama.WaitForLocal {
		t.Fatalf("a hook may turn idempotence off: %v", err)
	}
	cfg.Version = "0.10.2.0"
	_, err = build(cfg, options{})
	if err == nil || !strings.Contains(err.Error(), `KAFKA_VERSION="0.10.2.0": the idempotent producer needs 0.11.0 or later`) {
		t.Fatalf("old version: %v", err)
	}
	var ve *ValidationError
	if _, err := New(Config{}); !errors.As(err, &ve) {
		t.Fatalf("New(Config{}): %v", err)
	}
}
