package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/worker"
)

// checkCommittedOutput is checkOutput for a read_committed reader: each
// input's two records exactly once, in key order, among what committed
// transactions hold. It returns how many records ReadAll sees (aborted and
// committed).
func checkCommittedOutput(t *testing.T, b *testBundle, out string, inputs int) (uncommitted int) {
	t.Helper()
	recs, err := b.cluster.ReadCommitted(ctx(t), out)
	if err != nil {
		t.Fatal(err)
	}
	checkOutputRecords(t, recs, inputs)
	all, err := b.cluster.ReadAll(ctx(t), out)
	if err != nil {
		t.Fatal(err)
	}
	return len(all)
}

// With exactly-once, outputs, retries in place and dead letters reach a
// read_committed reader once per input, in key order, and the group's
// offsets reach the end.
func TestExactlyOnceOutput(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	out := b.outputTopic(t, 3)
	const n, keys = 600, 20
	b.produceKeyed(t, n, keys)
	cfg := b.config()
	cfg.ExactlyOnce = true
	e := &emitter{out: out, failEvery: 7, calls: map[string]int{}}
	reg := prometheus.NewRegistry()
	start(t, cfg, e, worker.WithRegisterer(reg))
	b.waitCommitted(t, 60*time.Second)
	checkCommittedOutput(t, b, out, n)
	// The output is counted as package producer counts its sends; a failed
	// delivery's output was never sent.
	if sent := counterVal(t, reg, producer.MetricSent, out); sent != 2*n {
		t.Errorf("%s{topic=%q} = %v, want %d", producer.MetricSent, out, sent, 2*n)
	}
}

// A transaction the broker refuses to take the offsets into aborts: the
// worker gives its partitions up and handles their messages again, and a
// read_committed reader still sees each input's output exactly once.
func TestExactlyOnceAbortedTransactionIsHandledAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	requireFake(t, b)
	out := b.outputTopic(t, 2)
	const n, keys = 300, 10
	b.produceKeyed(t, n, keys)
	var refuse atomic.Int32
	refuse.Store(2) // the first two commits of handled messages are refused
	fake := b.cluster.Fake()
	fake.ControlKey(int16(kmsg.TxnOffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		r := req.(*kmsg.TxnOffsetCommitRequest)
		handled := false // past a start offset: the transaction holds output
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				handled = handled || rp.Offset > 0
			}
		}
		if !handled || refuse.Add(-1) < 0 {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.IllegalGeneration.Code // what a fenced zombie gets
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	logs := &testutil.Logs{}
	cfg := b.config()
	cfg.ExactlyOnce = true
	e := &emitter{out: out, calls: map[string]int{}}
	start(t, cfg, e, worker.WithLogger(logs.Logger()))
	b.waitCommitted(t, 60*time.Second)
	if len(logs.Find(slog.LevelError, "transaction aborted; the partitions are given up and their messages since the last commit handled again")) == 0 {
		t.Fatal("no transaction aborted: the fault was not exercised")
	}
	if all := checkCommittedOutput(t, b, out, n); all <= 2*n {
		t.Fatalf("%d output records written in all, want more than the %d committed: the aborted transactions held none", all, 2*n)
	}
}

// poisonEmitter is emitter, except that the messages of the poison key
// always fail (after producing), so they go through the retry tier to the
// dead-letter topic.
type poisonEmitter struct {
	emitter
	poison string
}

func (p *poisonEmitter) Handle(ctx context.Context, m *handler.Message) error {
	if string(m.Key) == p.poison {
		_ = worker.Produce(ctx, &producer.Message{Topic: p.out, Key: m.Key, Value: []byte("never")})
		return errors.New("poison")
	}
	return p.emitter.Handle(ctx, m)
}

// With exactly-once, a message that keeps failing reaches its retry tier
// and then the dead-letter topic through transactions: a read_committed
// reader sees it once in each, never the output its failed deliveries
// produced, and every topic's offsets reach the end.
func TestExactlyOnceRetryTierAndDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	out := b.outputTopic(t, 2)
	const n, keys = 200, 10 // k0 is poison: 20 messages
	b.produceKeyed(t, n, keys)
	cfg := b.retryConfig(2, 50*time.Millisecond)
	cfg.ExactlyOnce = true
	h := &poisonEmitter{emitter: emitter{out: out, calls: map[string]int{}}, poison: "k0"}
	start(t, cfg, h)
	b.waitCommitted(t, 30*time.Second)
	b.waitCommittedPastData(t, b.tierTopic(1))
	testutil.WaitFor(t, 30*time.Second, "the poison messages in the dead-letter topic", func() bool {
		recs, err := b.cluster.ReadCommitted(ctx(t), b.dlqTopic())
		return err == nil && len(recs) >= n/keys
	})
	for topic, want := range map[string]int{b.tierTopic(1): n / keys, b.dlqTopic(): n / keys} {
		recs, err := b.cluster.ReadCommitted(ctx(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, r := range recs {
			seen[string(r.Value)]++
		}
		if len(recs) != want || len(seen) != want {
			t.Errorf("%s: %d committed records of %d messages, want each of the %d poison messages once", topic, len(recs), len(seen), want)
		}
	}
	recs, err := b.cluster.ReadCommitted(ctx(t), out)
	if err != nil {
		t.Fatal(err)
	}
	var good []kafkatest.ReadRecord
	for _, r := range recs {
		if string(r.Value) == "never" {
			t.Fatalf("the output of a failed delivery was committed: %q", r.Value)
		}
		good = append(good, r)
	}
	checkOutputRecords(t, good, n-n/keys)
}

// waitCommittedPastData waits until the group's committed offset on each
// partition of topic is past its last record a read_committed consumer
// gets. A topic written in transactions ends with a transaction marker,
// which no consumer receives, so the committed offset stays below the end
// offset.
func (b *testBundle) waitCommittedPastData(t *testing.T, topic string) {
	t.Helper()
	var last string
	testutil.WaitFor(t, 30*time.Second, "committed offsets past the data of "+topic, func() bool {
		recs, err := b.cluster.ReadCommitted(ctx(t), topic)
		if err != nil {
			return false
		}
		want := map[int32]int64{}
		for _, r := range recs {
			want[r.Partition] = r.Offset + 1
		}
		com, err := b.cluster.CommittedOffsets(ctx(t), b.group, topic)
		if err != nil {
			return false
		}
		last = fmt.Sprintf("want %v, committed %v", want, com)
		for p, w := range want {
			if com[p] < w {
				return false
			}
		}
		return true
	})
	t.Logf("%s: %s", topic, last)
}

// A zombie: worker A still runs when a replacement B starts with the same
// KAFKA_INSTANCE_ID (a restarted pod whose old self is not dead yet). A
// holds output in its open transaction (it commits every 5 minutes here). B's
// transactional producer takes over the id, which aborts A's transaction
// and fences A's producer, and B takes A's place in the group. A's Run
// ends with a *FatalError saying why; a read_committed reader sees each
// input's output exactly once although both workers handled some inputs.
//
// A's handlers are paused, and its records acknowledged, before B starts:
// sarama's transaction manager has a data race (IBM/sarama#2913) between
// a record failing and a state change, which a fenced producer with
// records in flight trips under -race.
func TestExactlyOnceZombieIsFenced(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	out := b.outputTopic(t, 2)
	const n, keys = 2000, 40
	b.produceKeyed(t, n, keys)
	cfg := b.config()
	cfg.ExactlyOnce, cfg.InstanceID = true, "pod-0"

	var paused atomic.Bool
	var producing atomic.Int32
	eA := &emitter{out: out, calls: map[string]int{}}
	hA := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		producing.Add(1)
		if paused.Load() {
			producing.Add(-1)
			<-ctx.Done() // the zombie stalls until its partitions are taken away
			return ctx.Err()
		}
		defer producing.Add(-1)
		return eA.Handle(ctx, m)
	})
	cfgA := cfg
	cfgA.CommitInterval = 5 * time.Minute // A's output stays in its open transaction
	logsA := &testutil.Logs{}
	a, err := worker.New(cfgA, hA, worker.WithLogger(logsA.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(runCtx) }()
	testutil.WaitFor(t, 30*time.Second, "worker A to handle some messages", func() bool {
		eA.mu.Lock()
		defer eA.mu.Unlock()
		return len(eA.calls) >= n/10
	})
	paused.Store(true)
	var handledByA int
	testutil.WaitFor(t, 30*time.Second, "A's handlers to stop producing and its output to be acknowledged", func() bool {
		if producing.Load() > 0 {
			return false
		}
		eA.mu.Lock()
		handledByA = len(eA.calls)
		eA.mu.Unlock()
		recs, err := b.cluster.ReadAll(ctx(t), out)
		return err == nil && len(recs) == 2*handledByA
	})
	start(t, cfg, &emitter{out: out, calls: map[string]int{}})
	select {
	case err := <-aDone:
		var f *worker.FatalError
		if !errors.As(err, &f) {
			t.Fatalf("the zombie's Run returned %v, want a *worker.FatalError", err)
		}
		t.Logf("zombie: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		<-aDone
		t.Fatal("the zombie went on running for 60s after its replacement started")
	}
	b.waitCommitted(t, 90*time.Second)
	// Some of A's output may have committed before B fenced it (a flush);
	// the rest was aborted.
	if all := checkCommittedOutput(t, b, out, n); all <= 2*n || all > 2*n+2*handledByA {
		t.Fatalf("%d output records written, want the %d committed plus up to the zombie's %d, some of them aborted", all, 2*n, 2*handledByA)
	}
}

// A new owner with exactly-once reads its start offset stable (sarama's
// offset fetch asks RequireStable under read_committed, which the worker
// sets): while a transaction holding offsets of the group is still open
// (the previous owner's last commit, its markers not yet written), it
// waits, and it starts where that transaction commits, not below, so
// nothing before it is handled (and its output emitted) twice.
func TestExactlyOnceStartWaitsForAnOpenTransactionsOffsets(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n, k = 100, 60
	b.produceKeyed(t, n, 5)
	txnID := uniqueName(t, "previous-owner")
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.cluster.Addrs()...), kgo.TransactionalID(txnID))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var zero kadm.Offsets
	zero.AddOffset(b.topic, 0, 0, -1) // the group exists, at offset 0
	if resp, err := adm.CommitOffsets(ctx(t), b.group, zero); err != nil || resp.Error() != nil {
		t.Fatalf("commit offset 0: %v %v", err, resp.Error())
	}
	// The previous owner's transaction: offset k committed in it, not ended.
	id, epoch, err := cl.ProducerID(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, id, epoch, b.group
	if resp, err := add.RequestWith(ctx(t), cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("AddOffsetsToTxn: %v %+v", err, resp)
	}
	topics, err := adm.ListTopics(ctx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.ProducerID, commit.ProducerEpoch, commit.Group, commit.Generation = txnID, id, epoch, b.group, -1
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = b.topic, topics[b.topic].ID
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch = 0, k, -1
	rt.Partitions = append(rt.Partitions, rp)
	commit.Topics = append(commit.Topics, rt)
	if resp, err := commit.RequestWith(ctx(t), cl); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("TxnOffsetCommit: %v %+v", err, resp)
	}

	var below, handled atomic.Int64
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if m.Offset < k {
			below.Add(1)
		}
		handled.Add(1)
		return nil
	})
	logs := &testutil.Logs{}
	cfg := b.config()
	cfg.ExactlyOnce = true
	start(t, cfg, h, worker.WithLogger(logs.Logger()))
	testutil.WaitFor(t, 30*time.Second, "the worker to join the group", func() bool {
		state, members, err := b.cluster.GroupState(ctx(t), b.group)
		return err == nil && state == "Stable" && members == 1
	})
	if handled.Load() != 0 {
		t.Fatalf("the worker handled %d messages while the offsets of an open transaction were pending", handled.Load())
	}
	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = txnID, id, epoch, true
	if resp, err := end.RequestWith(ctx(t), cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("EndTxn: %v %+v", err, resp)
	}
	b.waitCommitted(t, 30*time.Second)
	if below.Load() > 0 || handled.Load() != n-k {
		t.Fatalf("handled %d messages, %d of them below the offset %d the open transaction committed; want the %d above it", handled.Load(), below.Load(), k, n-k)
	}
}

// A stop ends in time when the transaction coordinator stops answering
// (EndTxn, AddOffsetsToTxn, TxnOffsetCommit swallowed): the open
// transaction is left to the broker's timeout, Run returns within
// WORKER_SHUTDOWN_TIMEOUT + 5s, and once the coordinator answers again a
// new worker brings every input's output, exactly once, to a
// read_committed reader.
func TestExactlyOnceStopEndsWhenTheTransactionCoordinatorIsSilent(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	requireFake(t, b)
	out := b.outputTopic(t, 2)
	var silent atomic.Bool
	var swallowed atomic.Int64
	fake := b.cluster.Fake()
	for _, key := range []kmsg.Key{kmsg.EndTxn, kmsg.AddOffsetsToTxn, kmsg.TxnOffsetCommit} {
		fake.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			fake.KeepControl()
			if !silent.Load() {
				return nil, nil, false
			}
			swallowed.Add(1)
			return nil, nil, true // handled, and never answered
		})
	}
	const first, second = 200, 40
	b.produceKeyed(t, first, 20)
	cfg := b.config()
	cfg.ExactlyOnce, cfg.InstanceID = true, "pod-0"
	cfg.ShutdownTimeout = 5 * time.Second
	e := &emitter{out: out, calls: map[string]int{}}
	w := start(t, cfg, e)
	b.waitCommitted(t, 30*time.Second)

	silent.Store(true)
	err := b.cluster.ProduceN(ctx(t), b.topic, second, func(i int) ([]byte, []byte) {
		return fmt.Appendf(nil, "s%d", i), fmt.Appendf(nil, "s%d/0", i) // keys of their own
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "a transaction request swallowed", func() bool { return swallowed.Load() > 0 })
	if took := w.stopTimed(t); took > cfg.ShutdownTimeout+stopBound {
		t.Fatalf("Run took %v to return with a silent transaction coordinator; want at most %v", took, cfg.ShutdownTimeout+stopBound)
	}

	silent.Store(false)
	start(t, cfg, e) // the same instance id: its producer fences the silent one's transaction
	b.waitCommitted(t, 60*time.Second)
	checkCommittedOutput(t, b, out, first+second)
}

// Rebalances in the middle of exactly-once work: workers join and leave
// (cooperative and eager strategies) while messages are handled and
// produce; every transaction spans the partitions its worker holds at its
// commit. A read_committed reader sees each input's output exactly once,
// in key order, and the offsets reach the end.
func TestExactlyOnceRebalanceChurn(t *testing.T) {
	t.Parallel()
	for _, strategy := range []worker.RebalanceStrategy{worker.StrategyCooperativeSticky, worker.StrategyRange} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 6)
			out := b.outputTopic(t, 3)
			const n, keys = 6000, 200
			b.produceKeyed(t, n, keys)
			e := &emitter{out: out, calls: map[string]int{}}
			handled := func() int {
				e.mu.Lock()
				defer e.mu.Unlock()
				return len(e.calls)
			}
			h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
				select {
				case <-time.After(500 * time.Microsecond):
				case <-ctx.Done():
					return ctx.Err()
				}
				return e.Handle(ctx, m)
			})
			cfg := b.config()
			cfg.ExactlyOnce, cfg.RebalanceStrategy, cfg.Concurrency = true, strategy, 16
			at := func(k int) {
				testutil.WaitFor(t, time.Minute, "progress", func() bool { return handled() >= k })
			}
			w1 := start(t, cfg, h)
			at(800)
			w2 := start(t, cfg, h)
			at(2000)
			w3 := start(t, cfg, h)
			at(3200)
			w1.stop(t)
			at(4400)
			w2.stop(t)
			b.waitCommitted(t, time.Minute)
			w3.stop(t)
			checkCommittedOutput(t, b, out, n)
		})
	}
}

// A revoked partition whose handler outlives the revoke's drain deadline
// (it ignores its context) is fenced; when that handler then returns, its
// output is already in the open transaction but its offset can no longer
// follow. The transaction is doomed and aborts, the partitions are handled
// again, and a read_committed reader still sees each input's output once,
// although the new owner handled that message too.
func TestExactlyOnceOutputOfAFencedHandlerIsAborted(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	out := b.outputTopic(t, 2)
	const n, keys = 400, 20
	b.produceKeyed(t, n, keys)
	e := &emitter{out: out, calls: map[string]int{}}
	var slowRunning atomic.Int32
	release := make(chan struct{})
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if m.Offset == 0 && m.Topic == b.topic && slowRunning.Add(1) <= 2 {
			<-release // ignores its context: outlives the drain deadline
		}
		return e.Handle(ctx, m)
	})
	logs := &testutil.Logs{}
	cfg := b.config()
	cfg.ExactlyOnce, cfg.RebalanceTimeout = true, 2*time.Second // a revoke drains for 1.6s
	start(t, cfg, h, worker.WithLogger(logs.Logger()))
	testutil.WaitFor(t, 30*time.Second, "both partitions' first messages running", func() bool { return slowRunning.Load() >= 2 })
	start(t, cfg, h) // joins: one partition is revoked from the first worker
	testutil.WaitFor(t, 30*time.Second, "a revoked partition fenced with its handler still running", func() bool {
		for _, r := range logs.Records() {
			if strings.Contains(r.Message, "released") && strings.Contains(testutil.Attr(r, "reason"), "revoked") {
				return true
			}
		}
		return false
	})
	close(release) // the fenced handler returns, with output
	b.waitCommitted(t, time.Minute)
	if len(logs.Find(slog.LevelError, "transaction aborted; the partitions are given up and their messages since the last commit handled again")) == 0 {
		t.Error("the fenced handler's output did not abort the transaction")
	}
	checkCommittedOutput(t, b, out, n)
}
