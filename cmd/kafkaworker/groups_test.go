package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// TestGroupsDescribeWorkerLeftovers runs a real worker whose handler holds
// two keys, so the offsets after each finish ahead of the commit, and checks
// the lag and the decoded done-set groups describe reports, while the
// worker runs and after it stopped.
func TestGroupsDescribeWorkerLeftovers(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 2)
	// Partition 0: offset 0 and 4 are held; 1-3 and 5-9 (other keys) finish.
	var recs []kafkatest.Record
	for i := range 10 {
		key := "fast-" + string(rune('a'+i))
		if i == 0 || i == 4 {
			key = "slow-" + string(rune('a'+i))
		}
		recs = append(recs, kafkatest.Record{Topic: "orders", Partition: 0, Explicit: true, Key: []byte(key), Value: []byte("v")})
	}
	if _, err := e.cluster.Produce(e.ctx, recs...); err != nil {
		t.Fatal(err)
	}
	cfg := e.workerConfig("g", "orders")
	cfg.DLQEnabled = false // a failing message is retried in place, forever
	release := make(chan struct{})
	var failedAfterRelease atomic.Int32
	w := e.startWorker(cfg, func(ctx context.Context, m *handler.Message) error {
		if !strings.HasPrefix(string(m.Key), "slow-") {
			return nil
		}
		select {
		case <-release: // from now on it fails at once, and stays unfinished
			failedAfterRelease.Add(1)
			return errors.New("still broken")
		case <-ctx.Done():
			return ctx.Err()
		}
	})

	var d groupDescription
	testutil.WaitFor(t, 20*time.Second, "the worker to commit a done-set of 8 offsets", func() bool {
		r := e.run("groups", "describe", "g", "-o", "json")
		d = groupDescription{}
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &d) == nil && len(d.Totals) == 1 && d.Totals[0].DoneAhead == 8
	})
	if d.State != "Stable" || len(d.Members) != 1 || d.Members[0].ClientID != "test-worker" || assignmentText(d.Members[0].Assignment) != "orders:0,1" {
		t.Errorf("running group: state %s, members %+v", d.State, d.Members)
	}
	// Stop the worker with no handler blocked: the slow keys fail and are
	// retried in place, so offsets 0 and 4 stay unfinished.
	close(release)
	testutil.WaitFor(t, 20*time.Second, "both held keys to fail after the release", func() bool { return failedAfterRelease.Load() >= 2 })
	w.stop(t)

	r := e.ok("groups", "describe", "g", "-o", "json")
	d = groupDescription{}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatal(err)
	}
	committed, err := e.cluster.CommittedOffsets(e.ctx, "g", "orders")
	if err != nil {
		t.Fatal(err)
	}
	p0 := d.Partitions[0]
	if d.State != "Empty" || len(d.Members) != 0 || p0.Partition != 0 || p0.Committed == nil || *p0.Committed != committed[0] || *p0.Committed != 0 {
		t.Fatalf("stopped group: state %s, %d members, partition 0 %+v; kadm says committed %v", d.State, len(d.Members), p0, committed)
	}
	if *p0.Lag != 10 || p0.End != 10 || p0.DoneAhead != 8 || len(p0.DoneRanges) != 2 ||
		p0.DoneRanges[0].Start != 1 || p0.DoneRanges[0].End != 4 || p0.DoneRanges[1].Start != 5 || p0.DoneRanges[1].End != 10 {
		t.Errorf("partition 0 = %+v, want lag 10, done [1,4) and [5,10)", p0)
	}
	if tot := d.Totals[0]; tot.Lag != 10 || tot.DoneAhead != 8 || tot.DoneRanges != 2 || tot.ToHandle != 2 {
		t.Errorf("totals = %+v, want lag 10, 8 done in 2 ranges, 2 to handle", tot)
	}

	text := e.ok("groups", "describe", "g").stdout
	for _, want := range []string{"group g: Empty, 0 member(s)", "8 in 2 ranges", "orders: lag 10; 8 finished ahead of the commit, in 2 range(s)", "2 to handle"} {
		if !strings.Contains(text, want) {
			t.Errorf("describe table lacks %q:\n%s", want, text)
		}
	}

	var groups []groupRow
	if err := json.Unmarshal([]byte(e.ok("groups", "list", "-o", "json").stdout), &groups); err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || groups[0] != (groupRow{"g", "Empty", 0}) {
		t.Errorf("groups list = %+v", groups)
	}
	e.fails([]string{"groups", "describe", "nope"}, `group "nope" does not exist`)
}
