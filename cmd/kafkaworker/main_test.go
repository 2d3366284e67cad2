package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-metrics, which sarama uses, starts one process-wide ticker.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

// env is an embedded cluster with an independent admin client (kadm) to
// check what the commands did.
type env struct {
	t       *testing.T
	cluster *kafkatest.Cluster
	admin   *kadm.Client
	ctx     context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The commands read the connection settings from the environment:
	// make sure none leaks in from the machine running the tests.
	unsetenv(t, "KAFKA_BROKERS", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TLS_ENABLED", "KAFKA_SASL_MECHANISM", "DLQ_TOPIC_TEMPLATE", "COLUMNS")
	c, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	// Metadata the admin caches would hide what a command just changed.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(func() { cancel(); cl.Close(); c.Close() })
	return &env{t: t, cluster: c, admin: kadm.NewClient(cl), ctx: ctx}
}

// result is what a command printed and whether it failed.
type result struct {
	stdout, stderr string
	code           int
}

// run runs the command line against the cluster, in process.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn("", args...)
}

// runIn is run with stdin.
func (e *env) runIn(stdin string, args ...string) result {
	e.t.Helper()
	var out, errb bytes.Buffer
	full := append(append([]string{}, args...), "--brokers", strings.Join(e.cluster.Addrs(), ","))
	code := run(e.ctx, full, strings.NewReader(stdin), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// ok runs the command and fails the test unless it succeeded.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("%v: exit %d, stderr: %s", args, r.code, r.stderr)
	}
	return r
}

// fails runs the command and checks that it failed with a one-line error
// containing each of want.
func (e *env) fails(args []string, want ...string) result {
	e.t.Helper()
	r := e.run(args...)
	checkFailure(e.t, args, r, want...)
	return r
}

func checkFailure(t *testing.T, args []string, r result, want ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("%v: succeeded, want failure; stdout: %s", args, r.stdout)
	}
	if strings.Count(strings.TrimRight(r.stderr, "\n"), "\n") != 0 || !strings.HasPrefix(r.stderr, "kafkaworker: ") {
		t.Errorf("%v: stderr is not one line starting kafkaworker: %q", args, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%v: stderr %q does not mention %q", args, r.stderr, w)
		}
	}
}

func (e *env) topic(name string, partitions int32) {
	e.t.Helper()
	if err := e.cluster.CreateTopic(e.ctx, name, partitions); err != nil {
		e.t.Fatal(err)
	}
}

// allCommands lists root and every command below it.
func allCommands(root *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{root}
	for _, c := range root.Commands() {
		out = append(out, allCommands(c)...)
	}
	return out
}

// topics returns the broker's topics and partition counts through a fresh
// client, so no cached metadata hides what a command just changed.
func (e *env) topics() map[string]int {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.Addrs()...))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	details, err := kadm.NewClient(cl).ListTopics(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]int{}
	for name, d := range details {
		out[name] = len(d.Partitions)
	}
	return out
}

// unsetenv unsets the variables for the test, restoring them after it (a
// variable set but empty is a configuration error, so clearing one by
// setting it to "" would not do).
func unsetenv(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		t.Setenv(name, "") // registers the restore
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}
