package integration

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The "partition released" line says what the coordinator acknowledged for
// the partition, never what was only marked and never a sentinel offset:
// after a graceful stop it equals the committed offset an independent client
// reads.
func TestReleasedLineSaysWhatWasCommitted(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	b.produceKeyed(t, 300, 30)
	rec := newRecorder()
	var logs testutil.Buffer
	w := start(t, b.config(), rec, worker.WithLogger(logs.TextLogger()))
	testutil.WaitFor(t, 30*time.Second, "all handled", func() bool { return rec.handled.Load() == 300 })
	w.stop(t)

	com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`messaging\.destination\.partition\.id=(\d+) reason=shutdown committed=(\S+)`)
	lines := linesWith(&logs, "partition released", b.topic)
	if len(lines) != 3 {
		t.Fatalf("%d released lines, want one per partition (3):\n%v", len(lines), lines)
	}
	for _, line := range lines {
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("released line without a committed offset: %s", line)
		}
		p, _ := strconv.Atoi(m[1])
		got, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil || got < 0 || got != com[int32(p)] {
			t.Errorf("partition %d: released line says committed=%s, the coordinator holds %d", p, m[2], com[int32(p)])
		}
	}
}
