package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
)

// xError is the error type of the failures the replay test replays.
type xError struct{}

func (xError) Error() string { return "x failed\nsecond line" }

// deadLettering is a worker on orders that dead-letters "x-*" values with an
// xError and "y-*" values with a plain error until fixed is set, and
// records every value it handled successfully.
type deadLettering struct {
	fixed   atomic.Bool
	mu      sync.Mutex
	handled map[string]int
}

func (d *deadLettering) handle(_ context.Context, m *handler.Message) error {
	v := string(m.Value)
	if !d.fixed.Load() {
		switch {
		case strings.HasPrefix(v, "x-"):
			return retry.Permanent(&xError{})
		case strings.HasPrefix(v, "y-"):
			return retry.Permanent(errors.New("y failed"))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handled[v]++
	return nil
}

func (d *deadLettering) count(v string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.handled[v]
}

// deadLetterTen starts the worker and waits until 10 messages (5 x, 5 y)
// are in the dead-letter topic orders.g.dlq.
func deadLetterTen(t *testing.T, e *env) *deadLettering {
	t.Helper()
	e.topic("orders", 2)
	d := &deadLettering{handled: map[string]int{}}
	e.startWorker(e.workerConfig("g", "orders"), d.handle)
	var recs []kafkatest.Record
	for i := range 5 {
		k := string(rune('a' + i))
		recs = append(recs,
			kafkatest.Record{Topic: "orders", Key: []byte("kx" + k), Value: []byte("x-" + k), Headers: map[string]string{"app": "a"}},
			kafkatest.Record{Topic: "orders", Key: []byte("ky" + k), Value: []byte("y-" + k)},
			kafkatest.Record{Topic: "orders", Key: []byte("ok" + k), Value: []byte("ok-" + k)})
	}
	if _, err := e.cluster.Produce(e.ctx, recs...); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "10 dead letters", func() bool {
		end, err := e.cluster.EndOffsets(e.ctx, "orders.g.dlq")
		return err == nil && sum(end) == 10
	})
	return d
}

func TestDLQList(t *testing.T) {
	e := newEnv(t)
	deadLetterTen(t, e)
	lines := e.ok("dlq", "list", "--topic", "orders", "--group", "g", "-o", "json").stdout
	var all []deadLetterJSON
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		var d deadLetterJSON
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		all = append(all, d)
	}
	if len(all) != 10 {
		t.Fatalf("dlq list -o json: %d dead letters, want 10", len(all))
	}
	src, err := e.cluster.ReadAll(e.ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		orig := findRecord(src, d.OriginalPartition, d.OriginalOffset)
		if orig == nil || string(orig.Key) != *d.Key.Text || d.OriginalTopic != "orders" || d.Group != "g" || d.Attempts != 1 || d.FailedAt.IsZero() {
			t.Errorf("dead letter %+v does not point at its original record %+v", d, orig)
		}
		if d.Value != nil {
			t.Error("dlq list printed a value without --values")
		}
		wantType := map[byte]string{'x': "*main.xError", 'y': "error"}[(*d.Key.Text)[1]]
		if d.ErrorType != wantType {
			t.Errorf("key %s: error type %q, want %q", *d.Key.Text, d.ErrorType, wantType)
		}
	}

	t.Setenv("COLUMNS", "100")
	table := e.ok("dlq", "list", "--topic", "orders", "--group", "g", "--error-type", "*main.xError").stdout
	if n := strings.Count(table, "*main.xError"); n != 5 || strings.Contains(table, "x-a") || !strings.Contains(table, "5 dead letter(s) match, of 10") {
		t.Errorf("--error-type table (%d x rows), or it shows a payload:\n%s", n, table)
	}
	for _, l := range strings.Split(table, "\n") {
		if len([]rune(l)) > 100 {
			t.Errorf("line wider than COLUMNS=100: %q", l)
		}
	}
	if out := e.ok("dlq", "list", "--dlq-topic", "orders.g.dlq", "--key", "kyb", "--values").stdout; !strings.Contains(out, "y-b") || strings.Count(out, "orders/") != 1 {
		t.Errorf("--key kyb --values:\n%s", out)
	}
	if out := e.ok("dlq", "list", "--dlq-topic", "orders.g.dlq", "--since", "2999-01-01T00:00:00Z").stdout; !strings.Contains(out, "no dead letters match") {
		t.Errorf("--since the future:\n%s", out)
	}
	if out := e.ok("dlq", "list", "--dlq-topic", "orders.g.dlq", "--since", "1h", "--until", "2999-01-01T00:00:00Z", "-o", "json").stdout; strings.Count(out, "\n") != 10 {
		t.Errorf("--since 1h --until the future: %d lines, want 10", strings.Count(out, "\n"))
	}
}

func findRecord(recs []kafkatest.ReadRecord, p int32, off int64) *kafkatest.ReadRecord {
	for i := range recs {
		if recs[i].Partition == p && recs[i].Offset == off {
			return &recs[i]
		}
	}
	return nil
}

func TestDLQBadInput(t *testing.T) {
	e := newEnv(t)
	e.topic("plain", 1)
	if _, err := e.cluster.Produce(e.ctx, kafkatest.Record{Topic: "plain", Value: []byte("secret payload")}); err != nil {
		t.Fatal(err)
	}
	r := e.fails([]string{"dlq", "list", "--dlq-topic", "plain"}, "none of the 1 record(s)", "not a kafkaworker dead-letter topic")
	if !strings.Contains(r.stderr, "the first: plain/0@0") || strings.Contains(r.stdout+r.stderr, "secret") {
		t.Errorf("the foreign record is not named, or its payload is shown: %q %q", r.stdout, r.stderr)
	}
	e.fails([]string{"dlq", "replay", "--dlq-topic", "plain"}, "not a kafkaworker dead-letter topic")
	if committed, _ := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.plain", "plain"); len(committed) != 0 {
		t.Errorf("a refused replay committed %v", committed)
	}
	e.fails([]string{"dlq", "list", "--topic", "orders"}, "--topic SOURCE and --group GROUP")
	e.fails([]string{"dlq", "list", "--topic", "orders", "--group", "g"}, `topic "orders.g.dlq" does not exist`)
	e.fails([]string{"dlq", "list", "--dlq-topic", "plain", "--since", "last week"}, `--since "last week"`)
	e.fails([]string{"dlq", "replay", "--dlq-topic", "plain", "--rate", "fast"}, `--rate "fast"`)
	e.fails([]string{"dlq", "replay", "--dlq-topic", "plain", "--to", "nope"}, "nope", "does not exist")
}
