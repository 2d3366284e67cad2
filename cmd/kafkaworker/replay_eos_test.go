package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// deadLetters writes n dead letters to orders.g.dlq (2 partitions) as a
// worker of group g consuming orders (3 partitions) writes them, with the
// kw-* headers: keys k-NN, values v-NN.
func deadLetters(t *testing.T, e *env, n int) {
	t.Helper()
	e.topic("orders", 3)
	e.topic("orders.g.dlq", 2)
	recs := make([]kafkatest.Record, 0, n)
	for i := range n {
		recs = append(recs, kafkatest.Record{Topic: "orders.g.dlq", Key: fmt.Appendf(nil, "k-%02d", i), Value: fmt.Appendf(nil, "v-%02d", i),
			Headers: dlqHeaders(i)})
	}
	if _, err := e.cluster.Produce(e.ctx, recs...); err != nil {
		t.Fatal(err)
	}
}

// dlqHeaders are the kw-* headers of the i-th dead letter of orders.
func dlqHeaders(i int) map[string]string {
	failed := strconv.FormatInt(time.Now().UnixMilli(), 10)
	return map[string]string{"app": "a", "kw-original-topic": "orders", "kw-original-partition": strconv.Itoa(i % 3),
		"kw-original-offset": strconv.Itoa(i), "kw-original-timestamp": failed, "kw-group": "g", "kw-attempt": "1",
		"kw-error": "boom", "kw-error-type": "*main.xError", "kw-failed-at": failed}
}

// buildCommand builds this command's binary into a temporary directory.
func buildCommand(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kafkaworker")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// checkExactlyOnce checks that a read_committed reader of orders sees each
// of the n dead letters exactly once, and that the replay group's
// committed offsets are the dead-letter topic's end offsets.
func checkExactlyOnce(t *testing.T, e *env, n int) {
	t.Helper()
	recs := e.readTopic("orders", true)
	counts := values(recs)
	for i := range n {
		if v := fmt.Sprintf("v-%02d", i); counts[v] != 1 {
			t.Errorf("%s seen %d times by a read_committed reader, want 1", v, counts[v])
		}
	}
	if len(recs) != n || len(counts) != n {
		t.Errorf("read_committed reader saw %d records, %d distinct, want %d: %v", len(recs), len(counts), n, counts)
	}
	checkExactlyOnceGroupAtEnd(t, e)
}

// checkExactlyOnceGroupAtEnd checks that the replay group's committed
// offsets are the dead-letter topic's end offsets.
func checkExactlyOnceGroupAtEnd(t *testing.T, e *env) {
	t.Helper()
	committed, err := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	end, err := e.cluster.EndOffsets(e.ctx, "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(committed) != fmt.Sprint(end) {
		t.Errorf("replay group committed %v, want the dead-letter topic's end offsets %v", committed, end)
	}
}

// TestReplayExactlyOnceAcrossSIGKILL runs the command as a process, paced
// so it is mid-way with a transaction open, SIGKILLs it, and runs it again
// to the end: a read_committed reader sees every dead letter exactly once,
// the records of the killed run's open transaction were aborted (the re-run
// fenced it), and the replay group stands at the dead-letter topic's end.
func TestReplayExactlyOnceAcrossSIGKILL(t *testing.T) {
	bin := buildCommand(t)
	e := newEnv(t)
	const n = 40
	deadLetters(t, e, n)
	args := []string{"dlq", "replay", "--dlq-topic", "orders.g.dlq", "--brokers", strings.Join(e.cluster.Addrs(), ",")}

	var out1, err1 bytes.Buffer
	first := exec.CommandContext(e.ctx, bin, append(args, "--rate", "5/s")...)
	first.Stdout, first.Stderr = &out1, &err1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = first.Process.Kill()
			_ = first.Wait()
		}
	})
	// Mid-way: some records committed, and a transaction open with two or
	// more.
	testutil.WaitFor(t, 30*time.Second, "the replay to commit some records and send more", func() bool {
		committed := len(e.readTopic("orders", true))
		return committed >= 5 && len(e.readTopic("orders", false)) >= committed+2
	})
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	werr := first.Wait()
	exited = true
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Exited() {
		t.Fatalf("first run was not killed: %v; stdout %q, stderr %q", werr, out1.String(), err1.String())
	}

	// Frozen: what the killed run committed, and what it sent.
	committedAtKill := len(e.readTopic("orders", true))
	sentAtKill := len(e.readTopic("orders", false))
	offsets, err := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed with %d record(s) committed and %d more sent in its open transaction; group at %v", committedAtKill, sentAtKill-committedAtKill, offsets)
	if committedAtKill >= n {
		t.Fatalf("the first run committed all %d records before the kill", committedAtKill)
	}
	// Records and progress commit together: the group is exactly as far as
	// the committed records (every dead letter matches).
	if sum(offsets) != int64(committedAtKill) {
		t.Errorf("replay group committed %v (%d records) but %d records are committed", offsets, sum(offsets), committedAtKill)
	}

	var out2, err2 bytes.Buffer
	second := exec.CommandContext(e.ctx, bin, args...)
	second.Stdout, second.Stderr = &out2, &err2
	if err := second.Run(); err != nil {
		t.Fatalf("re-run: %v; stdout %q, stderr %q", err, out2.String(), err2.String())
	}
	if want := fmt.Sprintf("replayed %d dead letter(s) from orders.g.dlq", n-committedAtKill); !strings.Contains(out2.String(), want) {
		t.Errorf("re-run printed %q, want %q", out2.String(), want)
	}
	checkExactlyOnce(t, e, n)
	// Every record the killed run sent and did not commit is in the topic,
	// aborted: read_uncommitted sees them besides the n.
	if got := len(e.readTopic("orders", false)); got != n+sentAtKill-committedAtKill {
		t.Errorf("read_uncommitted reader saw %d records, want %d replayed + %d aborted", got, n, sentAtKill-committedAtKill)
	}
	// consume stops at the end offsets though the topic ends in
	// transaction markers, which take offsets but are never delivered.
	if lines := strings.Count(e.ok("consume", "orders").stdout, "\n"); lines != n+sentAtKill-committedAtKill {
		t.Errorf("consume printed %d records, want %d", lines, n+sentAtKill-committedAtKill)
	}
}

// TestReplayConcurrentRunsFence starts a paced replay, then a second replay
// of the same dead-letter topic while the first runs: the second fences the
// first, which fails with one line saying so, and finishes the replay from
// the first's last commit. Nothing is sent twice.
func TestReplayConcurrentRunsFence(t *testing.T) {
	e := newEnv(t)
	const n = 30
	deadLetters(t, e, n)
	args := []string{"dlq", "replay", "--dlq-topic", "orders.g.dlq"}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var outA, errA testutil.Buffer
	doneA := make(chan int, 1)
	go func() {
		doneA <- run(ctx, append(args, "--rate", "5/s", "--brokers", e.cluster.Addrs()[0]), strings.NewReader(""), &outA, &errA)
	}()
	testutil.WaitFor(t, 20*time.Second, "the first replay to commit some records", func() bool {
		return len(e.readTopic("orders", true)) >= 2
	})

	// A dry run starts no producer: it fences nothing and sends nothing.
	if d := e.ok(append(args, "--dry-run")...); !strings.Contains(d.stdout, "dry run: would replay") {
		t.Errorf("dry run during a replay printed %q", d.stdout)
	}
	b := e.ok(args...)
	var codeA int
	select {
	case codeA = <-doneA:
	case <-e.ctx.Done():
		t.Fatal("the fenced replay did not end")
	}
	rA := result{outA.String(), errA.String(), codeA}
	t.Logf("fenced run: %s", rA.stderr)
	checkFailure(t, args, rA, "fenced by a newer replay: another replay of orders.g.dlq into group kafkaworker-replay.orders.g.dlq started",
		`transactional id "kafkaworker-replay.orders.g.dlq:orders.g.dlq"`)
	checkExactlyOnce(t, e, n)

	// The first run's commits and the second's add up to n.
	var byA int
	if _, err := fmt.Sscanf(rA.stderr[strings.Index(rA.stderr, "aborted after "):], "aborted after %d", &byA); err != nil {
		t.Fatalf("no count in %q: %v", rA.stderr, err)
	}
	if want := fmt.Sprintf("replayed %d dead letter(s)", n-byA); !strings.Contains(b.stdout, want) {
		t.Errorf("second replay printed %q, want %q (the first committed %d)", b.stdout, want, byA)
	}
}

// failTxnOffsetCommits makes the broker answer the next TxnOffsetCommit
// (every one, with always) with GROUP_AUTHORIZATION_FAILED, an error the
// producer recovers from by aborting the transaction. It returns how many
// it failed.
func failTxnOffsetCommits(e *env, always bool) *atomic.Int32 {
	var n atomic.Int32
	fake := e.cluster.Fake()
	fake.ControlKey(int16(kmsg.TxnOffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if always {
			fake.KeepControl()
		}
		n.Add(1)
		req := kreq.(*kmsg.TxnOffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.GroupAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &n
}

// TestReplayRetriesAnAbortedBatch: the broker refuses the batch's offset
// commit once; the replay aborts the transaction (its records stay
// invisible to read_committed readers) and sends the batch again in a new
// one, which commits.
func TestReplayRetriesAnAbortedBatch(t *testing.T) {
	e := newEnv(t)
	const n = 10
	deadLetters(t, e, n)
	failed := failTxnOffsetCommits(e, false)
	r := e.ok("dlq", "replay", "--dlq-topic", "orders.g.dlq")
	if failed.Load() != 1 || !strings.Contains(r.stdout, "replayed 10 dead letter(s)") {
		t.Fatalf("%d offset commit(s) failed; replay printed %q", failed.Load(), r.stdout)
	}
	checkExactlyOnce(t, e, n)
	if got := len(e.readTopic("orders", false)); got != 2*n {
		t.Errorf("read_uncommitted reader saw %d records, want the %d of the aborted transaction and the %d of the committed one", got, n, n)
	}
}

// TestReplayGivesUpAfterAbortedAttempts: a batch whose transaction aborts
// every time fails the replay with one line after replayAttempts tries,
// and nothing is committed: neither records nor progress.
func TestReplayGivesUpAfterAbortedAttempts(t *testing.T) {
	e := newEnv(t)
	deadLetters(t, e, 5)
	failed := failTxnOffsetCommits(e, true)
	args := []string{"dlq", "replay", "--dlq-topic", "orders.g.dlq"}
	e.fails(args, "transaction aborted 3 times", "not authorized to access this group", "Read on the replay group", "none of its records is committed", "0 sent before it; progress is saved in group kafkaworker-replay.orders.g.dlq")
	if failed.Load() != replayAttempts {
		t.Errorf("%d offset commits tried, want %d", failed.Load(), replayAttempts)
	}
	if recs := e.readTopic("orders", true); len(recs) != 0 {
		t.Errorf("a read_committed reader sees %d records of a replay whose every transaction aborted", len(recs))
	}
	if committed, _ := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq"); len(committed) != 0 {
		t.Errorf("replay group committed %v", committed)
	}
}

// TestReplayWaitsForStableOffsets: while a transaction of another producer
// holds offsets of the replay group, the replay's OffsetFetch
// (RequireStable) gets UNSTABLE_OFFSET_COMMIT; it waits, then fails with one
// line, sending nothing. Once the transaction aborts, its offsets never
// count.
func TestReplayWaitsForStableOffsets(t *testing.T) {
	defer func(w time.Duration) { stableWait = w }(stableWait)
	stableWait = time.Second
	e := newEnv(t)
	deadLetters(t, e, 10)
	const group = "kafkaworker-replay.orders.g.dlq"
	// The group exists, with nothing replayed (kfake answers an unknown
	// group GROUP_ID_NOT_FOUND, pending offsets or not).
	var none kadm.Offsets
	none.AddOffset("orders.g.dlq", 1, 0, -1)
	resp, err := e.admin.CommitOffsets(e.ctx, group, none)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.Addrs()...), kgo.TransactionalID("foreign"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id, epoch, err := cl.ProducerID(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = "foreign", id, epoch, group
	if resp, err := add.RequestWith(e.ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("AddOffsetsToTxn: %v %+v", err, resp)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.ProducerID, commit.ProducerEpoch, commit.Group, commit.Generation = "foreign", id, epoch, group, -1
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = "orders.g.dlq"
	topics, err := e.admin.ListTopics(e.ctx, "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	rt.TopicID = topics["orders.g.dlq"].ID // TxnOffsetCommit v6 names topics by id
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch = 0, 3, -1
	rt.Partitions = append(rt.Partitions, rp)
	commit.Topics = append(commit.Topics, rt)
	if resp, err := commit.RequestWith(e.ctx, cl); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("TxnOffsetCommit: %v %+v", err, resp)
	}

	args := []string{"dlq", "replay", "--dlq-topic", "orders.g.dlq"}
	e.fails(append(args, "--dry-run"), `replay group "kafkaworker-replay.orders.g.dlq" has offsets in a transaction still open`)
	e.fails(args, `replay group "kafkaworker-replay.orders.g.dlq" has offsets in a transaction still open`)
	if recs := e.readTopic("orders", false); len(recs) != 0 {
		t.Fatalf("a replay that could not read stable offsets sent %d records", len(recs))
	}

	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = "foreign", id, epoch, false
	if resp, err := end.RequestWith(e.ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("EndTxn: %v %+v", err, resp)
	}
	if d := e.ok(append(args, "--dry-run")...); !strings.Contains(d.stdout, "would replay 10 of 10") {
		t.Errorf("dry run after the abort printed %q, want all 10: the aborted offset must not count", d.stdout)
	}
}

// TestReplayReadsTheDLQCommitted: dead letters written in transactions (a
// worker with exactly-once on forwards them so) are replayed only once
// their transaction commits: an aborted one never, an open one at the end
// of the topic not yet (the replay stops at the last stable offset, and its
// group stays there), and by the next run once it commits.
func TestReplayReadsTheDLQCommitted(t *testing.T) {
	e := newEnv(t)
	const n = 6
	deadLetters(t, e, n)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.Addrs()...), kgo.TransactionalID("worker-eos"), kgo.DefaultProduceTopic("orders.g.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	i := n
	txn := func(end *kgo.TransactionEndTry, vals ...string) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			r := &kgo.Record{Key: []byte("k-" + v), Value: []byte(v)}
			for k, hv := range dlqHeaders(i) {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(hv)})
			}
			i++
			if err := cl.ProduceSync(e.ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if end != nil {
			if err := cl.EndTransaction(e.ctx, *end); err != nil {
				t.Fatal(err)
			}
		}
	}
	abort, commit := kgo.TryAbort, kgo.TryCommit
	txn(&abort, "aborted-0", "aborted-1")
	txn(&commit, "txn-0", "txn-1")
	txn(nil, "open-0") // left open

	r := e.ok("dlq", "replay", "--dlq-topic", "orders.g.dlq")
	if want := fmt.Sprintf("replayed %d dead letter(s)", n+2); !strings.Contains(r.stdout, want) {
		t.Errorf("replay printed %q, want %q", r.stdout, want)
	}
	counts := values(e.readTopic("orders", true))
	for _, v := range []string{"v-00", "v-05", "txn-0", "txn-1"} {
		if counts[v] != 1 {
			t.Errorf("%s replayed %d times, want 1", v, counts[v])
		}
	}
	if len(counts) != n+2 || counts["aborted-0"]+counts["aborted-1"]+counts["open-0"] != 0 {
		t.Errorf("replayed %v: want the %d committed dead letters only", counts, n+2)
	}
	lso, err := e.admin.ListCommittedOffsets(e.ctx, "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	committed, err := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	lso.Each(func(o kadm.ListedOffset) {
		if committed[o.Partition] != o.Offset {
			t.Errorf("replay group at %v, want the last stable offsets %v", committed, lso)
		}
	})

	if err := cl.EndTransaction(e.ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if r := e.ok("dlq", "replay", "--dlq-topic", "orders.g.dlq"); !strings.Contains(r.stdout, "replayed 1 dead letter(s)") {
		t.Errorf("replay after the open transaction committed printed %q", r.stdout)
	}
	if c := values(e.readTopic("orders", true)); c["open-0"] != 1 || len(c) != n+3 {
		t.Errorf("after the second replay: %v", c)
	}
	checkExactlyOnceGroupAtEnd(t, e)
}
