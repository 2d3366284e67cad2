package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// Secured clusters: SASL (PLAIN, SCRAM) and TLS (CA verification, mutual
// TLS), against kafkatest's WithSASL and WithTLS. These need the embedded
// broker: a real cluster named by KAFKA_BROKERS has its own security,
// which these tests cannot set up.

var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// setupSecured is setup on an embedded cluster started with opts.
func setupSecured(t *testing.T, partitions int32, opts ...kafkatest.Option) *testBundle {
	t.Helper()
	skipShort(t)
	c, err := kafkatest.FromEnv(opts...)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(c.Close)
	b := &testBundle{cluster: c, topic: uniqueName(t, "topic"), group: uniqueName(t, "group")}
	requireFake(t, b)
	if err := c.CreateTopic(ctx(t), b.topic, partitions); err != nil {
		t.Fatal(err)
	}
	return b
}

// runUntilError runs a worker that is expected to fail at start and returns
// Run's error and how long Run took.
func runUntilError(t *testing.T, cfg worker.Config, opts ...worker.Option) (error, time.Duration) {
	t.Helper()
	w, err := worker.New(cfg, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }), opts...)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	err = w.Run(c)
	took := time.Since(began)
	if err == nil {
		t.Fatalf("Run returned nil after %v, want an error", took)
	}
	return err, took
}

// Each SASL mechanism end to end: the worker logs in, consumes and commits,
// and a failing message goes through retry tier 1 (whose producer and
// consumer log in too) to the dead-letter topic.
func TestSASLMechanismsEndToEnd(t *testing.T) {
	t.Parallel()
	for _, mech := range saslMechanisms {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			b := setupSecured(t, 2, kafkatest.WithSASL(mech, "alice", "alice-secret"))
			b.produceKeyed(t, 50, 5)
			if _, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("k0"), Value: []byte("poison/0")}); err != nil {
				t.Fatal(err)
			}
			var ok, failed atomic.Int64
			h := handler.HandlerFunc(func(_ context.Context, m *handler.Message) error {
				if strings.HasPrefix(string(m.Value), "poison") {
					failed.Add(1)
					return flakyError{"poison"}
				}
				ok.Add(1)
				return nil
			})
			cfg := b.retryConfig(1, 100*time.Millisecond)
			cfg.SASLMechanism, cfg.SASLUsername, cfg.SASLPassword = mech, "alice", "alice-secret"
			var logs testutil.Buffer
			w := start(t, cfg, h, worker.WithLogger(logs.TextLogger()))

			if r := b.waitRecords(t, b.tierTopic(1), 1)[0]; string(r.Value) != "poison/0" {
				t.Fatalf("tier 1 holds %q, want the failing message", r.Value)
			}
			if r := b.waitRecords(t, b.dlqTopic(), 1)[0]; string(r.Value) != "poison/0" {
				t.Fatalf("the dead-letter topic holds %q, want the failing message", r.Value)
			}
			b.waitAllCommitted(t, b.topic, b.tierTopic(1))
			w.stop(t)
			if ok.Load() < 50 || failed.Load() != 2 {
				t.Fatalf("handled %d ok (want ≥ 50) and %d failing deliveries (want 2: source and tier 1)", ok.Load(), failed.Load())
			}
			cleartext := strings.Contains(logs.String(), "cleartext")
			if (mech == "PLAIN") != cleartext {
				t.Errorf("%s without TLS: WARN about a cleartext password logged: %v, want %v", mech, cleartext, mech == "PLAIN")
			}
		})
	}
}

// A wrong password fails Run at once (not after KAFKA_CONNECT_TIMEOUT),
// with an error naming the mechanism and the user.
func TestSASLWrongPasswordFailsAtOnce(t *testing.T) {
	t.Parallel()
	for _, mech := range saslMechanisms {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			b := setupSecured(t, 1, kafkatest.WithSASL(mech, "alice", "alice-secret"))
			cfg := b.config()
			cfg.SASLMechanism, cfg.SASLUsername, cfg.SASLPassword = mech, "alice", "not-the-password"
			cfg.ConnectTimeout = 30 * time.Second
			err, took := runUntilError(t, cfg, worker.WithLogger(testLogger(t)))
			msg := err.Error()
			for _, want := range []string{mech, `"alice"`, "authentication failed"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not say %q: %v", want, err)
				}
			}
			if took > 5*time.Second {
				t.Errorf("Run took %v to report a refused login; want it at once, not retried until KAFKA_CONNECT_TIMEOUT", took)
			}
		})
	}
}

// TLS with the cluster's CA: the worker verifies the broker and consumes.
func TestTLSWithCAVerification(t *testing.T) {
	t.Parallel()
	b := setupSecured(t, 2, kafkatest.WithTLS())
	ca, err := b.cluster.CAFile()
	if err != nil {
		t.Fatal(err)
	}
	b.produceKeyed(t, 100, 10)
	cfg := b.config()
	cfg.TLSCAFile = ca
	b.consumeAll(t, cfg, 100)
}

// Mutual TLS: with the client certificate the worker consumes; without it
// Run fails promptly.
func TestTLSMutual(t *testing.T) {
	t.Parallel()
	b := setupSecured(t, 1, kafkatest.WithMutualTLS())
	ca, err := b.cluster.CAFile()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := b.cluster.ClientCertFiles()
	if err != nil {
		t.Fatal(err)
	}
	b.produceKeyed(t, 20, 4)

	noCert := b.config()
	noCert.TLSCAFile, noCert.ConnectTimeout = ca, 3*time.Second
	err, took := runUntilError(t, noCert, worker.WithLogger(testLogger(t)))
	if took >= noCert.ConnectTimeout || !strings.Contains(err.Error(), "certificate required") || !strings.Contains(err.Error(), "KAFKA_TLS_CERT_FILE") {
		t.Errorf("without a client certificate: Run returned after %v with %v; want the broker's refusal at once, naming KAFKA_TLS_CERT_FILE", took, err)
	}

	cfg := b.config()
	cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = ca, certFile, keyFile
	b.consumeAll(t, cfg, 20)
}

// consumeAll runs a worker with cfg until everything on b's topic is
// committed, stops it, and fails unless exactly want distinct messages
// were handled.
func (b *testBundle) consumeAll(t *testing.T, cfg worker.Config, want int) {
	t.Helper()
	rec := newRecorder()
	w := start(t, cfg, rec)
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if n, _ := rec.check(t); n != want {
		t.Fatalf("handled %d distinct messages, want %d", n, want)
	}
}

// A CA that did not sign the broker's certificate: Run fails at once with
// an error that says so and names KAFKA_TLS_CA_FILE, instead of retrying.
func TestTLSWrongCAFailsPromptly(t *testing.T) {
	t.Parallel()
	b := setupSecured(t, 1, kafkatest.WithTLS())
	other, err := kafkatest.NewCluster(kafkatest.WithTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	wrongCA, err := other.CAFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.config()
	cfg.TLSCAFile, cfg.ConnectTimeout = wrongCA, 3*time.Second
	err, took := runUntilError(t, cfg, worker.WithLogger(testLogger(t)))
	if took >= cfg.ConnectTimeout {
		t.Errorf("Run took %v, want it to fail before KAFKA_CONNECT_TIMEOUT (%v)", took, cfg.ConnectTimeout)
	}
	for _, want := range []string{"certificate", "KAFKA_TLS_CA_FILE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// The password appears nowhere: not in any log line of a whole run (SCRAM
// over TLS, password from a file), nor of a refused login, nor in Run's
// error, nor in how Config prints.
func TestSecurityPasswordNeverLeaks(t *testing.T) {
	t.Parallel()
	const secret = "pw-Xyzzy-7f3a9c-S3cret"
	const wrong = "pw-Plugh-0b1d2e-Wr0ng"
	b := setupSecured(t, 2, kafkatest.WithTLS(), kafkatest.WithSASL("SCRAM-SHA-512", "svc-billing", secret))
	ca, err := b.cluster.CAFile()
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.produceKeyed(t, 30, 3)
	var logs testutil.Buffer
	cfg := b.retryConfig(1, 100*time.Millisecond)
	cfg.TLSCAFile, cfg.SASLMechanism, cfg.SASLUsername, cfg.SASLPasswordFile = ca, "SCRAM-SHA-512", "svc-billing", pwFile
	w := start(t, cfg, newRecorder(), worker.WithLogger(logs.TextLogger()))
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if !strings.Contains(logs.String(), "kafkaworker starting") {
		t.Fatalf("the run logged no start line; logs:\n%s", logs.String())
	}

	bad := b.config()
	bad.TLSCAFile, bad.SASLMechanism, bad.SASLUsername, bad.SASLPassword = ca, "SCRAM-SHA-512", "svc-billing", wrong
	runErr, _ := runUntilError(t, bad, worker.WithLogger(logs.TextLogger()))
	if !strings.Contains(runErr.Error(), "authentication failed") {
		t.Fatalf("want a refused login, got %v", runErr)
	}
	logs.TextLogger().Info("config", "config", bad)
	printed := fmt.Sprintf("%v %+v %#v %s", bad, bad, bad, bad)
	if !strings.Contains(logs.String(), "sasl_password=[set]") {
		t.Errorf("LogValue does not show the password as [set]")
	}
	for where, text := range map[string]string{"logs": logs.String(), "Run's error": runErr.Error(), "fmt": printed} {
		for _, pw := range []string{secret, wrong} {
			if strings.Contains(text, pw) {
				t.Errorf("the password %q appears in %s:\n%s", pw, where, text)
			}
		}
	}
}
