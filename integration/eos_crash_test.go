package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/worker"
)

// eosChildMain is the exactly-once worker process that
// TestExactlyOnceSIGKILLMidStream kills. TestMain runs it instead of the
// tests when KW_EOS_CHILD is set. Its configuration comes from the
// environment exactly as a deployed worker's does (WORKER_EXACTLY_ONCE,
// KAFKA_INSTANCE_ID among it). Its handler takes a couple of milliseconds,
// emits one output per input to KW_EOS_OUT with worker.Produce (same key,
// same value), and then appends one line to KW_EOS_LOG, so the parent can
// tell how far it got. It runs until killed; any return is a failure.
func eosChildMain() int {
	out := os.Getenv("KW_EOS_OUT")
	return childWorker("eos child", "KW_EOS_LOG", 2*time.Millisecond, func(ctx context.Context, m *handler.Message) error {
		return worker.Produce(ctx, &producer.Message{Topic: out, Key: m.Key, Value: m.Value})
	}, func(m *handler.Message) []byte { return fmt.Appendf(nil, "%s\n", m.Value) })
}

// eosCommitInterval and eosConcurrency are the child's and the fresh
// worker's settings: a few hundred messages per transaction.
const (
	eosCommitInterval = 200 * time.Millisecond
	eosConcurrency    = 4
)

// startEOSChild runs this test binary as the exactly-once worker (see
// eosChildMain), configured only through the environment, like
// startCrashChild: the parent's KAFKA_*, WORKER_*, RETRY_*, DLQ_* and KW_*
// variables are not inherited. instanceID "" leaves KAFKA_INSTANCE_ID
// unset.
func startEOSChild(t *testing.T, b *testBundle, out, instanceID, logPath string) *crashChild {
	t.Helper()
	cfg := b.config()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "KAFKA_"), strings.HasPrefix(k, "WORKER_"), strings.HasPrefix(k, "RETRY_"),
			strings.HasPrefix(k, "DLQ_"), strings.HasPrefix(k, "KW_"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "KW_EOS_CHILD=1", "KW_EOS_LOG="+logPath, "KW_EOS_OUT="+out,
		"KAFKA_BROKERS="+strings.Join(b.cluster.Addrs(), ","), "KAFKA_GROUP_ID="+b.group, "KAFKA_TOPICS="+b.topic,
		"KAFKA_SESSION_TIMEOUT="+cfg.SessionTimeout.String(), "KAFKA_HEARTBEAT_INTERVAL="+cfg.HeartbeatInterval.String(),
		"KAFKA_REBALANCE_TIMEOUT="+cfg.RebalanceTimeout.String(),
		"WORKER_EXACTLY_ONCE=true", fmt.Sprintf("WORKER_CONCURRENCY=%d", eosConcurrency),
		"WORKER_COMMIT_INTERVAL="+eosCommitInterval.String(),
		"RETRY_BACKOFF_INITIAL=10ms", "RETRY_BACKOFF_MAX=100ms")
	if instanceID != "" {
		env = append(env, "KAFKA_INSTANCE_ID="+instanceID)
	}
	return runChild(t, "eos child", env)
}

// openTxnLag returns, summed over topic's partitions, how far the last
// stable offset (what a read_committed consumer may read up to) is behind
// the high watermark: 0 when no transaction is open on the topic.
func openTxnLag(t *testing.T, b *testBundle, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.cluster.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	hwm, err := adm.ListEndOffsets(ctx(t), topic)
	if err == nil {
		err = hwm.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	lso, err := adm.ListCommittedOffsets(ctx(t), topic)
	if err == nil {
		err = lso.Error()
	}
	if err != nil {
		t.Fatalf("last stable offsets of %s: %v", topic, err)
	}
	var lag int64
	hwm.Each(func(o kadm.ListedOffset) {
		if s, ok := lso.Lookup(o.Topic, o.Partition); ok {
			lag += o.Offset - s.Offset
		}
	})
	return lag
}

// checkExactlyOnceOutput checks what a read_committed reader of out sees:
// for every one of the n keyed inputs (see produceKeyed) exactly one
// output, with the input's key and value, and each key's outputs in input
// order (seq 0, 1, 2, ... with no repeat and no gap).
func checkExactlyOnceOutput(t *testing.T, recs []kafkatest.ReadRecord, n, keys int) {
	t.Helper()
	seen := map[string]int{}
	next := map[string]int{} // next expected seq per key
	var dupes, wrongKey, disorder []string
	for _, r := range recs {
		v := string(r.Value)
		seen[v]++
		if seen[v] == 2 {
			dupes = append(dupes, v)
		}
		k, seq := parseValue(v)
		if string(r.Key) != k {
			wrongKey = append(wrongKey, fmt.Sprintf("%q keyed %q", v, r.Key))
		}
		if seq != next[k] {
			disorder = append(disorder, fmt.Sprintf("key %s: seq %d after %d (p%d@%d)", k, seq, next[k]-1, r.Partition, r.Offset))
		}
		next[k] = seq + 1
	}
	var missing []string
	for i := range n {
		if v := fmt.Sprintf("k%d/%d", i%keys, i/keys); seen[v] == 0 {
			missing = append(missing, v)
		}
	}
	first := func(s []string) []string { return s[:min(10, len(s))] }
	if len(dupes) > 0 {
		t.Errorf("read_committed: %d inputs have more than one output, first: %v", len(dupes), first(dupes))
	}
	if len(missing) > 0 {
		t.Errorf("read_committed: %d of %d inputs have no output, first: %v", len(missing), n, first(missing))
	}
	if len(disorder) > 0 {
		t.Errorf("read_committed: %d outputs out of their key's input order, first: %v", len(disorder), first(disorder))
	}
	if len(wrongKey) > 0 {
		t.Errorf("read_committed: %d outputs not keyed like their input, first: %v", len(wrongKey), first(wrongKey))
	}
	if len(recs) != n {
		t.Errorf("read_committed: %d output records, want %d (one per input)", len(recs), n)
	}
}

// TestExactlyOnceSIGKILLMidStream kills an exactly-once worker process with
// SIGKILL mid-stream, while it has a transaction open (outputs sent, offsets
// not yet committed), and lets a fresh worker on the same group finish the
// topic. A read_committed reader of the output topic must then see each
// input's output exactly once, in each key's input order, and the group's
// committed offsets must reach the end offsets.
//
//   - instance-id: KAFKA_INSTANCE_ID is set and the fresh worker has the
//     same one, so it has the dead worker's transactional.id and fences its
//     open transaction (aborts it) at once.
//   - no-instance-id: the dead worker's open transaction is aborted by the
//     broker only when its transaction timeout expires; until then it holds
//     the output partitions' last stable offset, so read_committed readers
//     see the fresh worker's outputs only after that.
//
// Without exactly-once the fresh worker emits a second output for each
// message the child had handled after its last commit, which fails the
// duplicate and order checks.
func TestExactlyOnceSIGKILLMidStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		instanceID bool
		deadline   time.Duration // for the fresh worker to finish, and for the outputs to be readable
	}{
		{"instance-id", true, time.Minute},
		{"no-instance-id", false, 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 4)
			out := b.outputTopic(t, 4)
			c := ctx(t)
			const n, keys = 3000, 50
			b.produceKeyed(t, n, keys)
			instanceID := ""
			if tc.instanceID {
				instanceID = uniqueName(t, "instance")
			}

			logPath := filepath.Join(t.TempDir(), "handled.log")
			child := startEOSChild(t, b, out, instanceID, logPath)
			testutil.WaitFor(t, time.Minute, "the child to commit 600 messages", func() bool {
				child.failIfExited(t)
				com, err := b.cluster.CommittedOffsets(c, b.group, b.topic)
				return err == nil && sumOffsets(com) >= 600
			})
			// That was just after a commit; let a random amount of work
			// follow, so the kill lands anywhere in the transaction.
			target := min(crashLogLines(logPath)+1+rand.IntN(400), n-300)
			testutil.WaitFor(t, time.Minute, fmt.Sprintf("the child to handle %d messages", target), func() bool {
				child.failIfExited(t)
				return crashLogLines(logPath) >= target
			})
			child.kill(t)
			killed := time.Now()
			handledAtKill := crashLogLines(logPath)

			killCom, err := b.cluster.CommittedOffsets(c, b.group, b.topic)
			if err != nil {
				t.Fatal(err)
			}
			committedAtKill := sumOffsets(killCom)
			if committedAtKill <= 0 || committedAtKill >= n {
				t.Fatalf("committed %d of %d at the kill %v: not a mid-stream crash", committedAtKill, n, killCom)
			}
			allAtKill, err := b.cluster.ReadAll(c, out)
			if err != nil {
				t.Fatal(err)
			}
			visibleAtKill, err := b.cluster.ReadCommitted(c, out)
			if err != nil {
				t.Fatal(err)
			}
			if len(allAtKill) > len(visibleAtKill) {
				t.Logf("at the kill the child had a transaction open: %d output records written, %d of them committed (%d to be aborted)",
					len(allAtKill), len(visibleAtKill), len(allAtKill)-len(visibleAtKill))
			} else {
				t.Logf("at the kill the child had no uncommitted output (%d records written, all committed)", len(allAtKill))
			}
			// What was committed before the crash is already exactly once,
			// and every input below a committed offset has its output
			// committed: offsets never commit without their outputs.
			checkPrefix(t, visibleAtKill)
			checkOutputsOfCommittedInputs(t, b, killCom, visibleAtKill)

			// The fresh worker: the same group, settings and instance id.
			cfg := b.config()
			cfg.ExactlyOnce = true
			cfg.InstanceID = instanceID
			cfg.Concurrency = eosConcurrency
			cfg.CommitInterval = eosCommitInterval
			def := worker.DefaultConfig() // the child's retry and dead-letter settings
			cfg.RetryTopicDelays, cfg.DLQEnabled = def.RetryTopicDelays, def.DLQEnabled
			var handled atomic.Int64
			h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
				if err := worker.Produce(ctx, &producer.Message{Topic: out, Key: m.Key, Value: m.Value}); err != nil {
					return err
				}
				handled.Add(1)
				return nil
			})
			w := start(t, cfg, h)
			b.waitCommitted(t, tc.deadline)
			finished := time.Since(killed)
			lagAtFinish := openTxnLag(t, b, out)
			w.stop(t)

			// No transaction may stay open on the output: a read_committed
			// consumer reads only up to the last stable offset.
			testutil.WaitFor(t, tc.deadline, "no open transaction on the output topic (last stable offset = high watermark)", func() bool {
				return openTxnLag(t, b, out) == 0
			})
			readable := time.Since(killed)

			recs, err := b.cluster.ReadCommitted(c, out)
			if err != nil {
				t.Fatal(err)
			}
			all, err := b.cluster.ReadAll(c, out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("produced %d; child handled %d before SIGKILL, committed %d %v at the kill; "+
				"fresh worker handled %d, offsets at the end %.1fs after the kill (open-transaction lag then %d), output all readable after %.1fs; "+
				"output: %d records read_committed, %d written (%d aborted)",
				n, handledAtKill, committedAtKill, killCom, handled.Load(), finished.Seconds(), lagAtFinish, readable.Seconds(),
				len(recs), len(all), len(all)-len(recs))
			checkExactlyOnceOutput(t, recs, n, keys)
			// With the same instance id the fresh worker has the dead one's
			// transactional.id, so its start aborted the open transaction at
			// once, not after the transaction timeout (10 s): by the time
			// its offsets reached the end nothing blocked read_committed
			// readers. (Checked only when that was well within the timeout.)
			if tc.instanceID && len(allAtKill) > len(visibleAtKill) && finished < 8*time.Second && lagAtFinish != 0 {
				t.Errorf("the restarted instance did not fence its predecessor's open transaction: %.1fs after the kill, with the fresh worker done, "+
					"the output's last stable offsets were still %d behind the end", finished.Seconds(), lagAtFinish)
			}
		})
	}
}

// checkPrefix checks that committed output read before the restart has no
// duplicate and keeps each key's order (a prefix of each key's inputs).
func checkPrefix(t *testing.T, recs []kafkatest.ReadRecord) {
	t.Helper()
	next := map[string]int{}
	for _, r := range recs {
		k, seq := parseValue(string(r.Value))
		if seq != next[k] {
			t.Errorf("committed output at the kill: key %s has seq %d after %d (p%d@%d): a duplicate or a gap was committed", k, seq, next[k]-1, r.Partition, r.Offset)
			return
		}
		next[k] = seq + 1
	}
}

// checkOutputsOfCommittedInputs checks that every source record below the
// group's committed offsets com has its output among the committed output
// records visible (read after com).
func checkOutputsOfCommittedInputs(t *testing.T, b *testBundle, com map[int32]int64, visible []kafkatest.ReadRecord) {
	t.Helper()
	src, err := b.cluster.ReadAll(ctx(t), b.topic)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range visible {
		have[string(r.Value)] = true
	}
	var without []string
	for _, r := range src {
		if r.Offset < com[r.Partition] && !have[string(r.Value)] {
			without = append(without, fmt.Sprintf("%s (p%d@%d)", r.Value, r.Partition, r.Offset))
		}
	}
	if len(without) > 0 {
		t.Errorf("at the kill, %d inputs below the committed offsets %v had no committed output, first: %v", len(without), com, without[:min(10, len(without))])
	}
}
