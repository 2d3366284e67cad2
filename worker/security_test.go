package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// tlsFiles writes a CA, a client certificate and its key (from a kafkatest
// cluster's generated PKI) into files.
func tlsFiles(t *testing.T) (ca, cert, key string) {
	t.Helper()
	c, err := kafkatest.NewCluster(kafkatest.WithTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if ca, err = c.CAFile(); err != nil {
		t.Fatal(err)
	}
	if cert, key, err = c.ClientCertFiles(); err != nil {
		t.Fatal(err)
	}
	return ca, cert, key
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecurityVariablesAreRead(t *testing.T) {
	t.Parallel()
	ca, cert, key := tlsFiles(t)
	c, err := configFrom(merge(validEnv(), map[string]string{
		"KAFKA_TLS_CA_FILE": ca, "KAFKA_TLS_CERT_FILE": cert, "KAFKA_TLS_KEY_FILE": key,
		"KAFKA_TLS_SERVER_NAME": "kafka.internal", "KAFKA_SASL_MECHANISM": "scram-sha-512",
		"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD_FILE": writeTemp(t, "pw", "s3cret\n"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := saramaConfig(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := s.Net
	if !n.TLS.Enable || n.TLS.Config.RootCAs == nil || len(n.TLS.Config.Certificates) != 1 || n.TLS.Config.ServerName != "kafka.internal" ||
		n.TLS.Config.InsecureSkipVerify {
		t.Errorf("TLS not applied: %+v", n.TLS)
	}
	if !n.SASL.Enable || n.SASL.Mechanism != sarama.SASLTypeSCRAMSHA512 || n.SASL.User != "svc" || n.SASL.Password != "s3cret" ||
		n.SASL.Version != sarama.SASLHandshakeV1 || n.SASL.SCRAMClientGeneratorFunc == nil {
		t.Errorf("SASL not applied (the password file's trailing newline must be dropped): mechanism %s user %s", n.SASL.Mechanism, n.SASL.User)
	}

	// Any KAFKA_TLS_* variable turns TLS on; nothing set leaves it off.
	c, err = configFrom(merge(validEnv(), map[string]string{"KAFKA_TLS_SERVER_NAME": "kafka.internal"}))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := saramaConfig(c, nil); !s.Net.TLS.Enable || s.Net.TLS.Config.RootCAs != nil {
		t.Error("KAFKA_TLS_SERVER_NAME alone must turn TLS on, with the system roots")
	}
	c, _ = configFrom(validEnv())
	if s, _ := saramaConfig(c, nil); s.Net.TLS.Enable || s.Net.SASL.Enable {
		t.Error("TLS or SASL on without any variable set")
	}
}

func TestSecurityErrorsNameEveryBadCombination(t *testing.T) {
	t.Parallel()
	ca, cert, _ := tlsFiles(t)
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"mechanism without credentials", map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN"},
			[]string{"KAFKA_SASL_USERNAME: missing", "KAFKA_SASL_PASSWORD: missing"}},
		{"unknown mechanism", map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI"},
			[]string{`KAFKA_SASL_MECHANISM="GSSAPI": unknown mechanism`}},
		{"credentials without mechanism", map[string]string{"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
			[]string{"KAFKA_SASL_MECHANISM: missing, but KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set"}},
		{"password twice, and a cert without its key, and an unreadable CA", map[string]string{
			"KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p",
			"KAFKA_SASL_PASSWORD_FILE": missing, "KAFKA_TLS_CERT_FILE": cert, "KAFKA_TLS_CA_FILE": missing,
		}, []string{
			"KAFKA_SASL_PASSWORD_FILE: set together with KAFKA_SASL_PASSWORD",
			"KAFKA_TLS_KEY_FILE: missing: KAFKA_TLS_CERT_FILE is set",
			"KAFKA_TLS_CA_FILE: cannot read it: open " + missing + ": no such file or directory",
		}},
		{"unreadable password, cert and key files", map[string]string{
			"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD_FILE": missing,
			"KAFKA_TLS_CERT_FILE": missing, "KAFKA_TLS_KEY_FILE": missing + ".key",
		}, []string{
			"KAFKA_SASL_PASSWORD_FILE: cannot read it: open " + missing + ": no such file or directory",
			"KAFKA_TLS_CERT_FILE: cannot read it: open " + missing,
			"KAFKA_TLS_KEY_FILE: cannot read it: open " + missing + ".key",
		}},
		{"CA file with no certificate, key without cert, empty password file", map[string]string{
			"KAFKA_TLS_CA_FILE": writeTemp(t, "ca.pem", "not a certificate"), "KAFKA_TLS_KEY_FILE": ca,
			"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD_FILE": writeTemp(t, "pw", "\n"),
		}, []string{"KAFKA_TLS_CA_FILE: ", "holds no PEM certificate", "KAFKA_TLS_CERT_FILE: missing: KAFKA_TLS_KEY_FILE is set",
			"KAFKA_SASL_PASSWORD_FILE: ", "is empty"}},
		{"cert and key that do not match", map[string]string{"KAFKA_TLS_CERT_FILE": cert, "KAFKA_TLS_KEY_FILE": ca},
			[]string{"KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE: "}},
		{"TLS explicitly off yet configured", map[string]string{"KAFKA_TLS_ENABLED": "false", "KAFKA_TLS_CA_FILE": ca},
			[]string{`KAFKA_TLS_ENABLED="false", but other KAFKA_TLS_* variables are set`}},
		{"OAUTHBEARER with a password", map[string]string{"KAFKA_SASL_MECHANISM": "OAUTHBEARER", "KAFKA_SASL_PASSWORD": "p"},
			[]string{"KAFKA_SASL_PASSWORD: not used with KAFKA_SASL_MECHANISM=OAUTHBEARER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := configFrom(merge(validEnv(), tc.env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

type staticToken struct{}

func (staticToken) Token() (*sarama.AccessToken, error) { return &sarama.AccessToken{Token: "t"}, nil }

func TestOAuthBearerNeedsTokenProvider(t *testing.T) {
	t.Parallel()
	c, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_SASL_MECHANISM": "OAUTHBEARER", "WORKER_CONCURRENCY": "0"}))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 {
		t.Fatalf("ConfigFromEnv cannot know the options: want only the concurrency problem, got %v", err)
	}
	c, err = configFrom(merge(validEnv(), map[string]string{"KAFKA_SASL_MECHANISM": "OAUTHBEARER"}))
	if err != nil {
		t.Fatal(err)
	}
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	bad := c
	bad.Concurrency = 0
	_, err = New(bad, h, WithRegisterer(nil))
	if err == nil || !strings.Contains(err.Error(), "WithTokenProvider") || !strings.Contains(err.Error(), "WORKER_CONCURRENCY") {
		t.Fatalf("New without WithTokenProvider: want one error naming the option and every other problem, got %v", err)
	}
	w, err := New(c, h, WithTokenProvider(staticToken{}), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	if w.sarama.Net.SASL.Mechanism != sarama.SASLTypeOAuth || w.sarama.Net.SASL.TokenProvider == nil {
		t.Fatalf("OAUTHBEARER not applied: %+v", w.sarama.Net.SASL)
	}
}

func TestConfigNeverPrintsPassword(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-Quux-91"
	c := DefaultConfig()
	c.Brokers, c.SASLMechanism, c.SASLUsername, c.SASLPassword = []string{"b:9092"}, "PLAIN", "svc", pw
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("cfg", slog.Any("config", c), slog.Any("ptr", &c))
	slog.New(slog.NewJSONHandler(&b, nil)).Info("cfg", slog.Any("config", c))
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), b.String()} {
		if strings.Contains(s, pw) {
			t.Fatalf("password printed: %s", s)
		}
		if !strings.Contains(s, "[set]") || !strings.Contains(s, "svc") {
			t.Fatalf("want the user name and [set] for the password: %s", s)
		}
	}
	_, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_SASL_PASSWORD": pw, "KAFKA_SASL_PASSWORD_FILE": "/x"}))
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("validation error must not hold the password: %v", err)
	}
}

func TestInsecureSettingsWarnAtStart(t *testing.T) {
	t.Parallel()
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"PLAIN without TLS", map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
			[]string{"level=WARN", "cleartext"}},
		{"skip verify", map[string]string{"KAFKA_TLS_INSECURE_SKIP_VERIFY": "true"}, []string{"level=WARN", "KAFKA_TLS_INSECURE_SKIP_VERIFY=true"}},
		{"PLAIN over TLS", map[string]string{"KAFKA_TLS_ENABLED": "true", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := configFrom(merge(validEnv(), tc.env))
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			w, err := New(c, h, WithLogger(slog.New(slog.NewTextHandler(&b, nil))), WithRegisterer(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			w.warnInsecure()
			for _, want := range tc.want {
				if !strings.Contains(b.String(), want) {
					t.Errorf("log does not say %q: %s", want, b.String())
				}
			}
			if tc.want == nil && b.Len() > 0 {
				t.Errorf("no warning expected, got %s", b.String())
			}
		})
	}
}
