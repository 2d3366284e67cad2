package integration

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
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
	out := uniqueName(t, "out")
	if err := b.cluster.CreateTopic(ctx(t), out, 3); err != nil {
		t.Fatal(err)
	}
	const n, keys = 600, 20
	b.produceKeyed(t, n, keys)
	cfg := b.config()
	cfg.ExactlyOnce = true
	e := &emitter{out: out, failEvery: 7, calls: map[string]int{}}
	start(t, cfg, e)
	b.waitCommitted(t, 60*time.Second)
	checkCommittedOutput(t, b, out, n)
}

// A transaction the broker refuses to take the offsets into aborts: the
// worker gives its partitions up and handles their messages again, and a
// read_committed reader still sees each input's output exactly once.
func TestExactlyOnceAbortedTransactionIsHandledAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	requireFake(t, b)
	out := uniqueName(t, "out")
	if err := b.cluster.CreateTopic(ctx(t), out, 2); err != nil {
		t.Fatal(err)
	}
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
