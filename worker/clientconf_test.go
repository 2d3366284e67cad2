package worker

import (
	"strings"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/clientconf"
)

func TestClientConfigFromEnvReadsOnlyConnectionSettings(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "a:9092,b:9092")
	t.Setenv("KAFKA_GROUP_ID", "")
	t.Setenv("KAFKA_TOPICS", "")
	t.Setenv("WORKER_CONCURRENCY", "lots") // a worker's problem, not a client's
	t.Setenv("DLQ_TOPIC_TEMPLATE", "dead.{topic}.{group}")
	t.Setenv("KAFKA_CLIENT_ID", "ops")
	c, err := clientConfigFromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Brokers, ",") != "a:9092,b:9092" || c.ClientID != "ops" || c.GroupID != "" || c.Topics != nil {
		t.Errorf("config = %v", c)
	}
	c.GroupID = "g"
	if got := c.DLQTopic("orders"); got != "dead.orders.g" {
		t.Errorf("DLQTopic = %q, want the template from DLQ_TOPIC_TEMPLATE", got)
	}

	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", "c:9092") // disagrees, but the flag overrides both
	c, err = clientConfigFromEnv([]string{"flag:9092"})
	if err != nil || strings.Join(c.Brokers, ",") != "flag:9092" {
		t.Errorf("override: %v, %v", c.Brokers, err)
	}
}

func TestClientConfigFromEnvChecksSecurity(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "a:9092")
	t.Setenv("KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem")
	t.Setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	_, err := clientConfigFromEnv(nil)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_TLS_CA_FILE") || !strings.Contains(err.Error(), "KAFKA_SASL_USERNAME") {
		t.Fatalf("err = %v, want it to name KAFKA_TLS_CA_FILE and KAFKA_SASL_USERNAME", err)
	}
}

func TestSaramaClientConfigUsesTheWorkersSecurity(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "a:9092")
	t.Setenv("KAFKA_TLS_ENABLED", "true")
	t.Setenv("KAFKA_SASL_MECHANISM", "scram-sha-256")
	t.Setenv("KAFKA_SASL_USERNAME", "u")
	t.Setenv("KAFKA_SASL_PASSWORD", "p")
	c, err := clientConfigFromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := saramaClientConfig(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Net.TLS.Enable || !s.Net.SASL.Enable || s.Net.SASL.User != "u" || s.Net.SASL.Password != "p" ||
		s.Net.SASL.SCRAMClientGeneratorFunc == nil || s.Metadata.AllowAutoTopicCreation {
		t.Errorf("sarama config: TLS %v SASL %v user %q scram %v autocreate %v", s.Net.TLS.Enable, s.Net.SASL.Enable,
			s.Net.SASL.User, s.Net.SASL.SCRAMClientGeneratorFunc != nil, s.Metadata.AllowAutoTopicCreation)
	}

	c.SASLMechanism = SASLOAuthBearer
	if _, err := saramaClientConfig(c, nil); err == nil || !strings.Contains(err.Error(), "OAUTHBEARER") {
		t.Errorf("OAUTHBEARER without a token provider: %v", err)
	}
}

func TestSaramaClientConfigFromAConfigInCode(t *testing.T) {
	s, err := saramaClientConfig(Config{Brokers: []string{"a:9092"}}, nil)
	if err != nil || s.ClientID != "kafkaworker" || s.Net.TLS.Enable || s.Net.SASL.Enable {
		t.Errorf("zero Config: %v, %v", s, err)
	}
}

func TestClientconfFromEnvIsTheWorkersReading(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "a:9092")
	t.Setenv("KAFKA_CLIENT_ID", "ops")
	t.Setenv("DLQ_TOPIC_TEMPLATE", "dead.{topic}.{group}")
	conn, err := clientconf.FromEnv([]string{"flag:9092"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(conn.Brokers, ",") != "flag:9092" || conn.Sarama.ClientID != "ops" || conn.Sarama.Metadata.AllowAutoTopicCreation {
		t.Errorf("conn: brokers %v client id %q autocreate %v", conn.Brokers, conn.Sarama.ClientID, conn.Sarama.Metadata.AllowAutoTopicCreation)
	}
	if got := conn.DLQTopic("orders", "g"); got != "dead.orders.g" {
		t.Errorf("DLQTopic = %q, want the template from DLQ_TOPIC_TEMPLATE", got)
	}

	t.Setenv("KAFKA_SASL_MECHANISM", SASLOAuthBearer)
	if _, err := clientconf.FromEnv(nil); err == nil || !strings.Contains(err.Error(), "OAUTHBEARER") {
		t.Errorf("OAUTHBEARER without a token provider: %v", err)
	}
}
