package integration

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

// TestScaleOutSIGKILLOneOfThree is the bench's scaleout SIGKILL row as a
// test: three worker processes (crashChildMain, each logging what it
// finished with one O_APPEND write) share a group on 12 partitions; once
// the group is stable with all three, the messages are produced, and one
// process is killed with SIGKILL mid-stream, at a random point of the
// commit cycle. The two survivors take over its partitions once its
// session expires and finish the topic. It asserts:
//
//   - nothing is lost: the three logs together hold every produced message;
//   - duplicates are bounded by what the killed process had finished but
//     not committed: messages handled more than once (by anyone) are at
//     most the killed process's logged messages at or above the offset the
//     group had committed for their partition at the kill. (Messages it
//     had in flight are not in its log, so a survivor handling them is a
//     first handling.)
//   - the group's committed offsets reach the end offsets.
func TestScaleOutSIGKILLOneOfThree(t *testing.T) {
	t.Parallel()
	b := setup(t, 12)
	c := ctx(t)
	const procs, n, keys = 3, 30000, 100

	dir := t.TempDir()
	children := make([]*crashChild, procs)
	logs := make([]string, procs)
	for i := range children {
		logs[i] = filepath.Join(dir, fmt.Sprintf("handled%d.log", i))
		children[i] = startCrashChild(t, b, logs[i])
	}
	// Produce only once the group is stable with all three members (and
	// stays so for a second: a cooperative rebalance takes two rounds), so
	// every process holds partitions when the messages arrive.
	var since time.Time
	testutil.WaitFor(t, time.Minute, "the group to be stable with 3 members for a second", func() bool {
		for _, ch := range children {
			ch.failIfExited(t)
		}
		state, members, err := b.cluster.GroupState(c, b.group)
		if err != nil || state != "Stable" || members != procs {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= time.Second
	})
	// Produce in the background (as produceKeyed does): the workers keep
	// up with the producer, so the kill below lands while messages are
	// still arriving.
	produced := time.Now()
	producing := make(chan error, 1)
	go func() {
		seq := make([]int, keys)
		producing <- b.cluster.ProduceN(c, b.topic, n, func(i int) ([]byte, []byte) {
			k := i % keys
			v := fmt.Sprintf("k%d/%d", k, seq[k])
			seq[k]++
			return fmt.Appendf(nil, "k%d", k), []byte(v)
		})
	}()

	lines := func() int {
		s := 0
		for _, l := range logs {
			s += crashLogLines(l)
		}
		return s
	}
	testutil.WaitFor(t, time.Minute, "every process to handle messages, a fifth of them in all, and a commit", func() bool {
		for i, ch := range children {
			ch.failIfExited(t)
			if crashLogLines(logs[i]) == 0 {
				return false
			}
		}
		if lines() < n/5 {
			return false
		}
		com, err := b.cluster.CommittedOffsets(c, b.group, b.topic)
		return err == nil && sumOffsets(com) > 0
	})
	t.Logf("+%v: %d handled, a commit seen", time.Since(produced), lines())
	// Let a random amount of work follow, so the kill lands anywhere in
	// the commit cycle (200 ms: startCrashChild's WORKER_COMMIT_INTERVAL).
	time.Sleep(rand.N(200 * time.Millisecond))
	children[0].kill(t)
	// Read after the kill: a commit the killed process had already sent may
	// still land, so this can only be lower than the true value, which
	// only loosens the bound below.
	killCom, err := b.cluster.CommittedOffsets(c, b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	atKill := lines()
	t.Logf("+%v: killed", time.Since(produced))
	if sumOffsets(killCom) >= n {
		t.Fatalf("the group committed all %d messages before the kill: not a mid-stream crash", n)
	}

	if err := <-producing; err != nil {
		t.Fatal(err)
	}
	b.waitCommitted(t, 2*time.Minute)
	// Every message below the committed offsets was logged before its
	// commit (the log write is in the handler), so the logs are complete.
	killed := readCrashLog(t, logs[0])
	times := map[string]int{}
	for i, l := range logs {
		es := killed
		if i > 0 {
			es = readCrashLog(t, l)
		}
		for _, e := range es {
			times[e.value]++
		}
	}
	var missing []string
	for i := range n {
		if v := fmt.Sprintf("k%d/%d", i%keys, i/keys); times[v] == 0 {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d messages were never handled (lost), first: %v", len(missing), n, missing[:min(10, len(missing))])
	}
	dupes, handlings := 0, 0
	for _, k := range times {
		handlings += k
		if k > 1 {
			dupes++
		}
	}
	bound, killedDistinct := 0, map[string]bool{}
	for _, e := range killed {
		if killedDistinct[e.value] {
			continue
		}
		killedDistinct[e.value] = true
		if e.pos.off >= killCom[e.pos.part] {
			bound++
		}
	}
	t.Logf("produced %d; %d handled by the 3 processes at the kill, %d by the killed one (%d distinct); committed at kill %d %v; "+
		"%d handlings in all, %d messages handled more than once, bound %d",
		n, atKill, len(killed), len(killedDistinct), sumOffsets(killCom), killCom, handlings, dupes, bound)
	if dupes > bound {
		t.Errorf("%d messages handled more than once, more than the %d the killed process finished above the committed offsets", dupes, bound)
	}
}
