package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
)

func TestTopicsLifecycle(t *testing.T) {
	e := newEnv(t)
	r := e.ok("topics", "create", "orders", "--partitions", "3", "--replication-factor", "1", "--config", "retention.ms=3600000")
	if !strings.Contains(r.stdout, "created topic orders: 3 partitions") {
		t.Errorf("create printed %q", r.stdout)
	}
	if n := e.topics()["orders"]; n != 3 {
		t.Fatalf("after create, orders has %d partitions on the broker, want 3", n)
	}
	if v, err := e.cluster.TopicConfig(e.ctx, "orders", "retention.ms"); err != nil || v != "3600000" {
		t.Errorf("retention.ms on the broker = %q (err %v), want 3600000", v, err)
	}

	var listed []topicRow
	if err := json.Unmarshal([]byte(e.ok("topics", "list", "-o", "json").stdout), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != (topicRow{"orders", 3, 1}) {
		t.Errorf("topics list -o json = %+v, want orders with 3 partitions", listed)
	}
	if table := e.ok("topics", "list").stdout; !strings.Contains(table, "TOPIC") || !strings.Contains(table, "orders") {
		t.Errorf("topics list table:\n%s", table)
	}

	e.ok("topics", "add-partitions", "orders", "--total", "5")
	if n := e.topics()["orders"]; n != 5 {
		t.Errorf("after add-partitions the broker has %d partitions, want 5", n)
	}
	e.fails([]string{"topics", "add-partitions", "orders", "--total", "2"}, "has 5 partitions already")

	e.fails([]string{"topics", "delete", "orders"}, "--yes")
	if _, ok := e.topics()["orders"]; !ok {
		t.Fatal("delete without --yes deleted the topic")
	}
	e.ok("topics", "delete", "orders", "--yes")
	testutil.WaitFor(t, 20*time.Second, "orders to be deleted", func() bool {
		_, ok := e.topics()["orders"]
		return !ok
	})
}

func TestTopicsDescribe(t *testing.T) {
	e := newEnv(t)
	if err := e.cluster.CreateTopicWithConfig(e.ctx, "orders", 2, map[string]string{"cleanup.policy": "compact"}); err != nil {
		t.Fatal(err)
	}
	produceExplicit(t, e, "orders", 1, 4)
	var d topicDescription
	if err := json.Unmarshal([]byte(e.ok("topics", "describe", "orders", "-o", "json").stdout), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Partitions) != 2 || d.Partitions[1].End != 4 || d.Partitions[0].End != 0 {
		t.Errorf("partitions = %+v, want 2 with end offsets 0 and 4", d.Partitions)
	}
	if d.Configs["cleanup.policy"] != "compact" {
		t.Errorf("configs = %v, want cleanup.policy=compact", d.Configs)
	}
	text := e.ok("topics", "describe", "orders").stdout
	if !strings.Contains(text, "cleanup.policy") || !strings.Contains(text, "2 partitions") {
		t.Errorf("describe table:\n%s", text)
	}
}

func TestTopicsBadInput(t *testing.T) {
	e := newEnv(t)
	e.fails([]string{"topics", "describe", "nope"}, `topic "nope" does not exist`)
	e.fails([]string{"topics", "describe"}, "missing TOPIC: see kafkaworker topics describe --help")
	e.fails([]string{"topics", "list", "extra"}, `unexpected argument "extra"`)
	e.fails([]string{"topcs", "list"}, `unknown command "topcs"`, "did you mean: topics")
	e.fails([]string{"topics", "create", "x", "--partitions", "2"}, "replication-factor")
	e.fails([]string{"topics", "create", "x", "--partitions", "2", "--replication-factor", "1", "--config", "oops"}, `--config "oops"`)
	e.fails([]string{"topics", "list", "-o", "yaml"}, `--format "yaml"`)
	if _, ok := e.topics()["x"]; ok {
		t.Error("a rejected create created the topic")
	}
}

func TestNoBrokers(t *testing.T) {
	unsetenv(t, "KAFKA_BROKERS", "KAFKA_BOOTSTRAP_SERVERS")
	var out, errb testutil.Buffer
	code := run(t.Context(), []string{"topics", "list"}, strings.NewReader(""), &out, &errb)
	checkFailure(t, nil, result{out.String(), errb.String(), code}, "--brokers", "KAFKA_BROKERS")

	t.Setenv("KAFKA_SASL_MECHANISM", "PLAIN") // no user, no password
	errb = testutil.Buffer{}
	code = run(t.Context(), []string{"topics", "list", "--brokers", "127.0.0.1:1"}, strings.NewReader(""), &out, &errb)
	checkFailure(t, nil, result{out.String(), errb.String(), code}, "KAFKA_SASL_USERNAME")
}

func TestHelpHasExamples(t *testing.T) {
	root := newRoot()
	for _, c := range allCommands(root) {
		if c.Example == "" && c.Name() != "help" && !strings.HasPrefix(c.CommandPath(), "kafkaworker completion") {
			t.Errorf("%s has no Example", c.CommandPath())
		}
	}
	var out, errb testutil.Buffer
	if code := run(t.Context(), []string{"dlq", "replay", "--help"}, strings.NewReader(""), &out, &errb); code != 0 || !strings.Contains(out.String(), "Examples:") {
		t.Errorf("dlq replay --help: exit %d, output %q", code, out.String())
	}
}

// TOPIC and GROUP arguments complete from the cluster, sorted, through
// cobra's hidden __complete command (what the completion scripts call); a
// second argument completes nothing.
func TestCompletionFromTheCluster(t *testing.T) {
	e := newEnv(t)
	e.topic("payments", 1)
	e.topic("orders", 1)
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 0})
	if _, err := e.admin.CommitOffsets(e.ctx, "billing", offs); err != nil {
		t.Fatal(err)
	}
	// The word being completed comes last, so the brokers come from the
	// environment here rather than from a trailing --brokers.
	t.Setenv("KAFKA_BROKERS", strings.Join(e.cluster.Addrs(), ","))
	lines := func(args ...string) []string {
		var out, errb testutil.Buffer
		if code := run(e.ctx, append([]string{"__complete"}, args...), strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("__complete %q: exit %d: %s", args, code, errb.String())
		}
		return strings.Split(strings.TrimSpace(out.String()), "\n")
	}
	if got := lines("topics", "describe", ""); !slices.Equal(got, []string{"orders", "payments", ":4"}) {
		t.Errorf("topics describe completes %q, want orders, payments and no file completion (:4)", got)
	}
	if got := lines("groups", "describe", ""); !slices.Equal(got, []string{"billing", ":4"}) {
		t.Errorf("groups describe completes %q, want billing", got)
	}
	if got := lines("topics", "describe", "orders", ""); !slices.Equal(got, []string{":4"}) {
		t.Errorf("a second argument completes %q, want nothing", got)
	}
}
