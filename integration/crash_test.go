package integration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/worker"
)

// crashChildMain is the worker process that TestCrashSIGKILLMidStream kills.
// TestMain runs it instead of the tests when KW_CRASH_CHILD is set. It reads
// its configuration from the environment exactly as a deployed worker does,
// and its handler appends "value partition offset\n" to KW_CRASH_LOG with one
// O_APPEND write after a message's work is done. A SIGKILL loses nothing
// already written (it is in the page cache), so the log is exactly what the
// killed process finished. It runs until killed; any return is a failure.
func crashChildMain() int {
	return childWorker("crash child", "KW_CRASH_LOG", time.Millisecond, nil, func(m *handler.Message) []byte {
		return fmt.Appendf(nil, "%s %d %d\n", m.Value, m.Partition, m.Offset)
	})
}

// childWorker is the main of a worker process that a test kills: its
// configuration comes from the environment exactly as a deployed worker's
// does; its handler takes wait (slow enough that a kill lands mid-stream),
// then does work (when not nil), and then appends line(m) to the file named
// by logEnv with one O_APPEND write, so the log is exactly what the killed
// process finished. It runs until killed; any return is a failure.
func childWorker(name, logEnv string, wait time.Duration, work func(context.Context, *handler.Message) error, line func(*handler.Message) []byte) int {
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}
	f, err := os.OpenFile(os.Getenv(logEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s: %v\n", name, logEnv, err)
		return 2
	}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		if work != nil {
			if err := work(ctx, m); err != nil {
				return err
			}
		}
		if _, err := f.Write(line(m)); err != nil {
			fmt.Fprintln(os.Stderr, name+": write log:", err)
			os.Exit(3)
		}
		return nil
	})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := worker.New(cfg, h, worker.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}
	err = w.Run(context.Background())
	fmt.Fprintln(os.Stderr, name+": Run returned before the kill:", err)
	return 1
}

// TestCrashSIGKILLMidStream is a real crash: a worker process is killed with
// SIGKILL mid-stream (no drain, no final commit, no LeaveGroup) and a fresh
// worker on the same group finishes the topic. It asserts:
//
//   - at the kill, every offset below the group's committed offset was
//     handled by the child: commits never run ahead of finished work;
//   - nothing is lost: child log ∪ fresh worker == every produced message.
//     This is also what proves the fresh worker right to skip the messages
//     above the commit that the child recorded as done (the done-set in the
//     commit metadata): each skipped one must be in the child's log;
//   - the fresh worker handles nothing below the kill-time committed offset,
//     so every duplicate is a message the child finished after its last
//     commit, and duplicates <= child handled - committed at kill;
//   - per-key order holds in the child's log and in the fresh worker
//     (redeliveries may step back, never skip ahead);
//   - the group ends with committed offsets equal to the end offsets, even
//     though the dead member stays in the group until its session expires.
func TestCrashSIGKILLMidStream(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	c := ctx(t)
	const n, keys = 20000, 100
	b.produceKeyed(t, n, keys)

	logPath := filepath.Join(t.TempDir(), "handled.log")
	child := startCrashChild(t, b, logPath)
	testutil.WaitFor(t, time.Minute, "the child to commit 3000 messages", func() bool {
		child.failIfExited(t)
		com, err := b.cluster.CommittedOffsets(c, b.group, b.topic)
		return err == nil && sumOffsets(com) >= 3000
	})
	// That was just after a commit; let a random amount of work follow, so
	// the kill lands anywhere in the commit cycle.
	target := crashLogLines(logPath) + rand.IntN(1500)
	testutil.WaitFor(t, time.Minute, fmt.Sprintf("the child to log %d messages", target), func() bool {
		child.failIfExited(t)
		return crashLogLines(logPath) >= target
	})
	child.kill(t)
	// Read after the kill: a commit the child had already sent may still
	// land, so this can only be lower than the true value, which weakens
	// no assertion below.
	killCom, err := b.cluster.CommittedOffsets(c, b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	committedAtKill := sumOffsets(killCom)
	if committedAtKill >= n {
		t.Fatalf("the child committed all %d messages before the kill: not a mid-stream crash", n)
	}

	// The child's log: per-key order, and full coverage below the commit.
	entries := readCrashLog(t, logPath)
	childRec := newRecorder()
	childRec.allowRedelivery = true
	childSeen := map[string]crashPos{}
	childOffsets := map[crashPos]bool{}
	nextSeq := map[string]int{} // one past the child's highest seq per key
	for _, e := range entries {
		_ = childRec.Handle(c, &handler.Message{Partition: e.pos.part, Offset: e.pos.off, Value: []byte(e.value)})
		childSeen[e.value] = e.pos
		childOffsets[e.pos] = true
		k, s := parseValue(e.value)
		nextSeq[k] = max(nextSeq[k], s+1)
	}
	childRec.check(t)
	for p, upTo := range killCom {
		for o := range upTo {
			if !childOffsets[crashPos{p, o}] {
				t.Fatalf("partition %d committed up to %d at the kill, but the child never finished offset %d: a commit ran ahead of the work", p, upTo, o)
			}
		}
	}

	// The fresh worker. Each key must continue exactly one past the child's
	// highest seq for it, after redelivering (stepping back to) what the
	// child finished but did not record as done; a skip ahead is an error.
	rec := newRecorder()
	rec.allowRedelivery = true
	maps.Copy(rec.next, nextSeq)
	var mu sync.Mutex
	fresh := map[string]crashPos{}
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		if err := rec.Handle(ctx, m); err != nil {
			return err
		}
		mu.Lock()
		fresh[string(m.Value)] = crashPos{m.Partition, m.Offset}
		mu.Unlock()
		return nil
	})
	w := start(t, b.config(), h)
	b.waitCommitted(t, 2*time.Minute)
	w.stop(t)
	rec.check(t)
	mu.Lock()
	defer mu.Unlock()

	var missing []string
	for i := range n {
		v := fmt.Sprintf("k%d/%d", i%keys, i/keys)
		_, byChild := childSeen[v]
		_, byFresh := fresh[v]
		if !byChild && !byFresh {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d messages were never handled (lost), first: %v", len(missing), n, missing[:min(10, len(missing))])
	}
	dupes, below := 0, ""
	for v, pos := range fresh {
		if pos.off < killCom[pos.part] {
			below = fmt.Sprintf("%s at p%d@%d, below the committed %d", v, pos.part, pos.off, killCom[pos.part])
		}
		if _, ok := childSeen[v]; ok {
			dupes++
		}
	}
	if below != "" {
		t.Errorf("the fresh worker handled messages below the offset committed at the kill, e.g. %s", below)
	}
	bound := int64(len(childSeen)) - committedAtKill
	t.Logf("produced %d; child logged %d (%d distinct) before SIGKILL; committed at kill %d %v; "+
		"fresh worker handled %d distinct (%d deliveries), skipped %d above the commit as already done; duplicates %d, bound %d",
		n, len(entries), len(childSeen), committedAtKill, killCom,
		len(fresh), rec.handled.Load(), n-committedAtKill-int64(len(fresh)), dupes, bound)
	if int64(dupes) > bound {
		t.Errorf("%d duplicates, more than the %d messages the child finished after its last commit", dupes, bound)
	}
}

// crashPos is where a message lives; crashEntry is a line of the child's log.
type (
	crashPos struct {
		part int32
		off  int64
	}
	crashEntry struct {
		value string
		pos   crashPos
	}
)

func crashLogLines(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte("\n"))
}

// readCrashLog parses the child's log, in the order it was written.
func readCrashLog(t *testing.T, path string) []crashEntry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []crashEntry
	for line := range strings.Lines(string(data)) {
		var e crashEntry
		if _, err := fmt.Sscanf(line, "%s %d %d\n", &e.value, &e.pos.part, &e.pos.off); err != nil {
			t.Fatalf("crash log line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

func sumOffsets(m map[int32]int64) int64 {
	var s int64
	for _, o := range m {
		s += o
	}
	return s
}

// crashChild is the worker process under test.
type crashChild struct {
	cmd    *exec.Cmd
	out    bytes.Buffer // stdout and stderr; read only after exited is closed
	exited chan struct{}
	err    error // from Wait
}

// startCrashChild runs this test binary as the worker, configured only
// through the environment variables the product reads. The parent's own
// KAFKA_*, WORKER_*, RETRY_* and KW_* variables (KAFKA_BROKERS names the
// real cluster when there is one) are not inherited: the child gets exactly
// the ones set here. The child is killed at the end of the test if it is
// still running, and its output is shown if the test failed.
func startCrashChild(t *testing.T, b *testBundle, logPath string) *crashChild {
	t.Helper()
	cfg := b.config()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "KAFKA_"), strings.HasPrefix(k, "WORKER_"),
			strings.HasPrefix(k, "RETRY_"), strings.HasPrefix(k, "KW_"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "KW_CRASH_CHILD=1", "KW_CRASH_LOG="+logPath,
		"KAFKA_BROKERS="+strings.Join(b.cluster.Addrs(), ","), "KAFKA_GROUP_ID="+b.group, "KAFKA_TOPICS="+b.topic,
		"KAFKA_SESSION_TIMEOUT="+cfg.SessionTimeout.String(), "KAFKA_HEARTBEAT_INTERVAL="+cfg.HeartbeatInterval.String(),
		"KAFKA_REBALANCE_TIMEOUT=10s",
		"WORKER_CONCURRENCY=16", "WORKER_COMMIT_INTERVAL=200ms", "RETRY_BACKOFF_INITIAL=10ms", "RETRY_BACKOFF_MAX=100ms")
	return runChild(t, "crash child", env)
}

// runChild starts this test binary as a child process with env (whose
// TestMain hook picks the child's main), and kills it when the test ends,
// failing the test if the child reported a data race.
func runChild(t *testing.T, name string, env []string) *crashChild {
	t.Helper()
	ch := &crashChild{cmd: exec.Command(os.Args[0], "-test.run=^$"), exited: make(chan struct{})}
	ch.cmd.Env = env
	ch.cmd.Stdout, ch.cmd.Stderr = &ch.out, &ch.out
	if err := ch.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { ch.err = ch.cmd.Wait(); close(ch.exited) }()
	t.Cleanup(func() {
		_ = ch.cmd.Process.Kill()
		<-ch.exited
		if strings.Contains(ch.out.String(), "DATA RACE") {
			t.Errorf("the %s reported a data race:\n%s", name, ch.out.String())
		} else if t.Failed() {
			t.Logf("%s output:\n%s", name, ch.out.String())
		}
	})
	return ch
}

// failIfExited fails the test if the child has stopped on its own.
func (ch *crashChild) failIfExited(t *testing.T) {
	t.Helper()
	select {
	case <-ch.exited:
		t.Fatalf("crash child exited before the kill: %v\n%s", ch.err, ch.out.String())
	default:
	}
}

// kill sends SIGKILL and waits for the process, failing the test unless it
// was the kill that ended it.
func (ch *crashChild) kill(t *testing.T) {
	t.Helper()
	ch.failIfExited(t)
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	<-ch.exited
	if ws, ok := ch.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("crash child ended with %v, not by SIGKILL\n%s", ch.err, ch.out.String())
	}
}
