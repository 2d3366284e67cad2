package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// Authorization: the worker logs in as a user that ACLs bind (kafkatest
// WithACLs and WithUser), and each test withholds one permission. The
// cluster's own client is a superuser, so the tests set up topics freely.

const (
	aclAdmin, aclAdminPassword = "admin", "admin-secret"
	aclUser, aclUserPassword   = "svc", "svc-secret"
)

// setupACL starts a cluster that checks ACLs, with the worker's user
// allowed acls (built once the topic and group names are known), and
// creates the source topic.
func setupACL(t *testing.T, partitions int32, acls func(b *testBundle) []kafkatest.ACL) *testBundle {
	t.Helper()
	b := &testBundle{topic: uniqueName(t, "topic"), group: uniqueName(t, "group")}
	skipShort(t)
	c, err := kafkatest.FromEnv(kafkatest.WithSASL("PLAIN", aclAdmin, aclAdminPassword), kafkatest.WithACLs(),
		kafkatest.WithUser("PLAIN", aclUser, aclUserPassword, acls(b)...))
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(c.Close)
	b.cluster = c
	requireFake(t, b)
	if err := c.CreateTopic(ctx(t), b.topic, partitions); err != nil {
		t.Fatal(err)
	}
	return b
}

// aclConfig is b.config logging in as the ACL-bound user.
func (b *testBundle) aclConfig(cfg worker.Config) worker.Config {
	cfg.SASLMechanism, cfg.SASLUsername, cfg.SASLPassword = "PLAIN", aclUser, aclUserPassword
	return cfg
}

// The worker may read its source and use its retry tier, but not write
// its dead-letter topic: a message failing for good is kept, its offset
// stays uncommitted, the log names the topic and the missing Write, and
// forward_errors_total counts it as unauthorized, while other messages
// flow. Once Write is granted the message reaches the dead-letter topic
// exactly once and the offset commits.
func TestACLDeadLetterWriteDenied(t *testing.T) {
	t.Parallel()
	b := setupACL(t, 1, func(b *testBundle) []kafkatest.ACL {
		return concat(
			kafkatest.AllowGroup(aclUser, b.group, kafkatest.OpRead),
			kafkatest.AllowTopic(aclUser, b.topic, kafkatest.OpRead),
			kafkatest.AllowTopic(aclUser, b.tierTopic(1), kafkatest.OpRead, kafkatest.OpWrite),
			kafkatest.AllowTopic(aclUser, b.dlqTopic(), kafkatest.OpDescribe),
		)
	})
	for _, topic := range []string{b.tierTopic(1), b.dlqTopic()} {
		if err := b.cluster.CreateTopic(ctx(t), topic, 1); err != nil {
			t.Fatal(err)
		}
	}
	bad, err := b.cluster.Produce(ctx(t), kafkatest.Record{Topic: b.topic, Key: []byte("poison"), Value: []byte("poison/0")})
	if err != nil {
		t.Fatal(err)
	}
	const others = 20
	b.produceKeyed(t, others, 4)

	rec := newRecorder()
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if string(m.Key) == "poison" {
			return retry.Permanent(errors.New("cannot be handled"))
		}
		return rec.Handle(ctx, m)
	})
	var logs testutil.Buffer
	reg := prometheus.NewRegistry()
	cfg := b.aclConfig(b.retryConfig(1, time.Second))
	cfg.RetryCreateTopics = false // the user may not create topics; they exist
	w := start(t, cfg, h, worker.WithLogger(logs.TextLogger()), worker.WithRegisterer(reg))

	unauthorized := func() float64 {
		return counterVal(t, reg, worker.MetricForwardErrors, b.group, b.dlqTopic(), metricdef.ReasonUnauthorized)
	}
	testutil.WaitFor(t, 30*time.Second, "the other messages handled", func() bool { return rec.handled.Load() == others })
	testutil.WaitFor(t, 30*time.Second, `refused publishes to the dead-letter topic counted with reason="unauthorized"`, func() bool { return unauthorized() >= 2 })
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := com[0]; ok && o > bad[0].Offset {
		t.Fatalf("committed offset %d is past the message that could not be dead-lettered (offset %d)", o, bad[0].Offset)
	}
	if recs, err := b.cluster.ReadAll(ctx(t), b.dlqTopic()); err != nil || len(recs) != 0 {
		t.Fatalf("the dead-letter topic holds %d records (%v) while Write is denied, want none", len(recs), err)
	}
	line := lineWith(logs.String(), "level=ERROR", "forwarding a failed message failed")
	for _, want := range []string{"destination=" + b.dlqTopic(), "reason=" + metricdef.ReasonUnauthorized,
		"User:" + aclUser, "--operation Write --topic " + b.dlqTopic()} {
		if !strings.Contains(line, want) {
			t.Errorf("the forward error line does not say %q:\n%s", want, line)
		}
	}

	if err := b.cluster.Grant(ctx(t), kafkatest.AllowTopic(aclUser, b.dlqTopic(), kafkatest.OpWrite)...); err != nil {
		t.Fatal(err)
	}
	if r := b.waitRecords(t, b.dlqTopic(), 1)[0]; string(r.Value) != "poison/0" {
		t.Fatalf("the dead-letter topic holds %q, want the failing message", r.Value)
	}
	b.waitCommitted(t, 30*time.Second)
	w.stop(t)
	if recs, err := b.cluster.ReadAll(ctx(t), b.dlqTopic()); err != nil || len(recs) != 1 {
		t.Fatalf("after the stop the dead-letter topic holds %d records (%v), want exactly 1", len(recs), err)
	}
	if n, dupes := rec.check(t); n != others || dupes != 0 {
		t.Fatalf("handled %d distinct messages with %d handled twice, want %d once each", n, dupes, others)
	}
}

// No Read on the consumer group: Run returns an error that says the group
// authorization failed, names the group and the ACL that fixes it.
func TestACLGroupDenied(t *testing.T) {
	t.Parallel()
	b := setupACL(t, 1, func(b *testBundle) []kafkatest.ACL {
		return kafkatest.AllowTopic(aclUser, b.topic, kafkatest.OpRead)
	})
	b.produceKeyed(t, 5, 1)
	err, took := runUntilError(t, b.aclConfig(b.config()), worker.WithLogger(testLogger(t)))
	var fe *worker.FatalError
	if !errors.As(err, &fe) {
		t.Fatalf("Run returned %v, want a *worker.FatalError", err)
	}
	for _, want := range []string{"group authorization failed", fmt.Sprintf("%q", b.group), "User:" + aclUser,
		"--operation Read --group " + b.group} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if took > 20*time.Second {
		t.Errorf("Run took %v to report it", took)
	}
}

// No Read on the source topic (only Describe): Run returns an error that
// says the topic authorization failed, naming the topic and the ACL.
func TestACLTopicReadDenied(t *testing.T) {
	t.Parallel()
	b := setupACL(t, 1, func(b *testBundle) []kafkatest.ACL {
		return concat(kafkatest.AllowGroup(aclUser, b.group, kafkatest.OpRead),
			kafkatest.AllowTopic(aclUser, b.topic, kafkatest.OpDescribe))
	})
	b.produceKeyed(t, 5, 1)
	err, took := runUntilError(t, b.aclConfig(b.config()), worker.WithLogger(testLogger(t)))
	var fe *worker.FatalError
	if !errors.As(err, &fe) {
		t.Errorf("Run returned %T, want a *worker.FatalError", err)
	}
	for _, want := range []string{"topic authorization failed", fmt.Sprintf("%q", b.topic), "User:" + aclUser,
		"--operation Read --topic " + b.topic} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if took > 20*time.Second {
		t.Errorf("Run took %v to report it", took)
	}
}

// No ACL at all on the source topic: the broker hides it, and Run's
// start-up check says it may not be described rather than that it is
// missing.
func TestACLTopicDescribeDenied(t *testing.T) {
	t.Parallel()
	b := setupACL(t, 1, func(b *testBundle) []kafkatest.ACL {
		return kafkatest.AllowGroup(aclUser, b.group, kafkatest.OpRead)
	})
	err, _ := runUntilError(t, b.aclConfig(b.config()), worker.WithLogger(testLogger(t)))
	for _, want := range []string{"authorization failed", fmt.Sprintf("%q", b.topic), "User:" + aclUser,
		"--operation Read --topic " + b.topic} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	var fe *worker.FatalError
	if !errors.As(err, &fe) {
		t.Errorf("Run returned %T, want a *worker.FatalError", err)
	}
	var mt *worker.MissingTopicsError
	if errors.As(err, &mt) {
		t.Errorf("a topic the user may not describe was reported missing: %v", err)
	}
}

func concat[T any](parts ...[]T) []T {
	var out []T
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Read on the group revoked while the worker runs (an ACL change, a
// principal rotated): commits and heartbeats are refused from then on, and
// no retry can cure that. Run ends with a *FatalError naming the group and
// the grant instead of consuming on with nothing committed; what was
// handled and committed before stays committed.
func TestACLGroupRevokedWhileRunning(t *testing.T) {
	t.Parallel()
	groupRead := func(b *testBundle) []kafkatest.ACL { return kafkatest.AllowGroup(aclUser, b.group, kafkatest.OpRead) }
	b := setupACL(t, 1, func(b *testBundle) []kafkatest.ACL {
		return concat(groupRead(b), kafkatest.AllowTopic(aclUser, b.topic, kafkatest.OpRead))
	})
	const first = 10
	b.produceKeyed(t, first, 2)
	rec := newRecorder()
	w, err := worker.New(b.aclConfig(b.config()), rec, worker.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- w.Run(runCtx) }()
	b.waitCommitted(t, 30*time.Second)

	if err := b.cluster.Revoke(ctx(t), groupRead(b)...); err != nil {
		t.Fatal(err)
	}
	b.produceKeyed(t, 5, 2)
	var runErr error
	select {
	case runErr = <-ran:
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after the group's Read was revoked")
	}
	var fe *worker.FatalError
	if !errors.As(runErr, &fe) {
		t.Fatalf("Run returned %v, want a *worker.FatalError", runErr)
	}
	for _, want := range []string{"group authorization failed", fmt.Sprintf("%q", b.group), "--operation Read --group " + b.group} {
		if !strings.Contains(strings.ToLower(runErr.Error()), strings.ToLower(want)) {
			t.Errorf("error does not say %q: %v", want, runErr)
		}
	}
	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil || com[0] < first {
		t.Fatalf("committed %v (%v) after the revocation, want the first %d kept", com, err, first)
	}
}
