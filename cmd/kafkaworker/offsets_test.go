package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

func TestOffsetsReset(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 2)
	produceExplicit(t, e, "orders", 0, 6)
	produceExplicit(t, e, "orders", 1, 4)
	w := e.startWorker(e.workerConfig("g", "orders"), func(context.Context, *handler.Message) error { return nil })
	testutil.WaitFor(t, 20*time.Second, "the worker to commit everything", func() bool {
		c, err := e.cluster.CommittedOffsets(e.ctx, "g", "orders")
		return err == nil && c[0] == 6 && c[1] == 4
	})

	e.fails([]string{"offsets", "reset", "g", "--topic", "orders", "--to", "oldest"}, "member(s)", "stop its workers first")
	w.stop(t)

	dry := e.ok("offsets", "reset", "g", "--topic", "orders", "--to", "oldest", "--dry-run")
	if !strings.Contains(dry.stdout, "dry run: group g not changed") || !strings.Contains(dry.stdout, "BEFORE") {
		t.Errorf("dry run printed:\n%s", dry.stdout)
	}
	if c, _ := e.cluster.CommittedOffsets(e.ctx, "g", "orders"); c[0] != 6 || c[1] != 4 {
		t.Fatalf("a dry run changed the offsets: %v", c)
	}

	var rows []resetRow
	if err := json.Unmarshal([]byte(e.ok("offsets", "reset", "g", "--topic", "orders", "--to", "2", "--partition", "0", "-o", "json").stdout), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || *rows[0].Before != 6 || rows[0].After != 2 {
		t.Errorf("reset rows = %+v", rows)
	}
	if c, _ := e.cluster.CommittedOffsets(e.ctx, "g", "orders"); c[0] != 2 || c[1] != 4 {
		t.Errorf("after reset of partition 0 to 2, committed = %v", c)
	}
	// The new commit carries no done-set.
	resp, err := e.admin.FetchOffsets(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := resp.Lookup("orders", 0); o.Metadata != "" {
		t.Errorf("metadata after reset = %q, want none", o.Metadata)
	}

	e.ok("offsets", "reset", "g", "--topic", "orders", "--to", "newest")
	if c, _ := e.cluster.CommittedOffsets(e.ctx, "g", "orders"); c[0] != 6 || c[1] != 4 {
		t.Errorf("after reset to newest, committed = %v", c)
	}
	e.ok("offsets", "reset", "g", "--topic", "orders", "--to", "2000-01-01T00:00:00Z")
	if c, _ := e.cluster.CommittedOffsets(e.ctx, "g", "orders"); c[0] != 0 || c[1] != 0 {
		t.Errorf("after reset to a time before every record, committed = %v", c)
	}

	e.fails([]string{"offsets", "reset", "g", "--topic", "orders", "--to", "soon"}, `--to "soon"`)
	e.fails([]string{"offsets", "reset", "g", "--topic", "nope", "--to", "oldest"}, `topic "nope" does not exist`)
	e.fails([]string{"offsets", "reset", "g", "--to", "oldest"}, "topic")
}
