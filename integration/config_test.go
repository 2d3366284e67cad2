package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The start-up line of a real run prints every effective setting: what
// the Config leaves to sarama shows sarama's value, an alias shows what it
// resolved to, and the password shows as [set].
func TestConfigStartLinePrintsEffectiveSettings(t *testing.T) {
	t.Parallel()
	const password = "pw-Plugh-startline"
	b := setupSecured(t, 1, kafkatest.WithSASL("PLAIN", "svc", password))
	cfg := b.config()
	cfg.SessionTimeout, cfg.HeartbeatInterval, cfg.MetadataRefresh = 0, 0, 0 // sarama's
	cfg.InitialOffset = "latest"
	cfg.SASLMechanism, cfg.SASLUsername, cfg.SASLPassword = "PLAIN", "svc", password
	var logs testutil.Buffer
	w := start(t, cfg, newRecorder(), worker.WithLogger(logs.TextLogger()))
	var line string
	testutil.WaitFor(t, 30*time.Second, "the start-up line", func() bool {
		line = lineWith(logs.String(), "kafkaworker starting")
		return !strings.HasPrefix(line, "(no line with")
	})
	w.stop(t)
	for _, want := range []string{
		"config.group=" + b.group, "config.topics=[" + b.topic + "]", "config.session_timeout=10s", "config.heartbeat_interval=3s",
		"config.rebalance_timeout=10s", "config.metadata_refresh=10m0s", "config.initial_offset=newest", "config.version=",
		"config.retry_backoff_initial=10ms", "config.retry_topic_template=", "config.dlq_topic_template=", "config.retry_create_topics=",
		"config.security.sasl_mechanism=PLAIN", "config.security.sasl_username=svc", "config.security.sasl_password=[set]",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("the start-up line does not say %q:\n%s", want, line)
		}
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("the password appears in the log")
	}
}
