package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
)

// TestReplayEndToEnd: a worker dead-letters 10 messages; after the fix,
// dlq replay --error-type sends the 5 that match back to the source topic,
// fresh (no kw-* failure headers, original headers kept, kw-replayed-at
// added); the worker handles them; a second identical replay sends 0.
func TestReplayEndToEnd(t *testing.T) {
	e := newEnv(t)
	d := deadLetterTen(t, e)
	// A record no worker wrote, in the middle of the dead-letter topic: skipped with a warning.
	if _, err := e.cluster.Produce(e.ctx, kafkatest.Record{Topic: "orders.g.dlq", Partition: 0, Explicit: true, Value: []byte("stray")}); err != nil {
		t.Fatal(err)
	}
	before, _ := e.cluster.EndOffsets(e.ctx, "orders")
	args := []string{"dlq", "replay", "--topic", "orders", "--group", "g", "--error-type", "*main.xError"}

	dry := e.ok(append(args, "--dry-run")...)
	if strings.Count(dry.stdout, "*main.xError") != 5 || !strings.Contains(dry.stdout, "would replay 5 of 11") {
		t.Errorf("dry run:\n%s", dry.stdout)
	}
	planned := strings.Split(strings.TrimSpace(e.ok(append(args, "--dry-run", "-o", "json")...).stdout), "\n")
	if len(planned) != 5 || !strings.Contains(planned[0], `"to":"orders"`) || !strings.Contains(planned[0], `"error_type":"*main.xError"`) {
		t.Errorf("dry run -o json: %q", planned)
	}
	if after, _ := e.cluster.EndOffsets(e.ctx, "orders"); sum(after) != sum(before) {
		t.Fatal("a dry run sent records")
	}
	if committed, _ := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq"); len(committed) != 0 {
		t.Fatalf("a dry run committed %v", committed)
	}

	d.fixed.Store(true)
	r := e.ok(args...)
	if !strings.Contains(r.stdout, "replayed 5 dead letter(s) from orders.g.dlq to their original topics (11 read, 6 skipped") {
		t.Errorf("replay printed %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "skipped 1 record(s) without kw-* headers") {
		t.Errorf("no warning about the stray record: %q", r.stderr)
	}
	// The replay writes in transactions: read as a read_committed consumer.
	recs := e.readTopic("orders", true)
	replayed := map[string]bool{}
	for _, rec := range recs {
		if rec.Offset < before[rec.Partition] {
			continue
		}
		replayed[string(rec.Value)] = true
		if _, fresh := retry.ReadInfo(headersOfRead(rec)); fresh || rec.Headers["kw-error"] != "" || rec.Headers[HeaderReplayedAt] == "" || rec.Headers["app"] != "a" {
			t.Errorf("replayed record %s headers %v: want app kept, kw-replayed-at added, no kw-* failure headers", rec.Value, rec.Headers)
		}
		if !strings.HasPrefix(string(rec.Value), "x-") || string(rec.Key) != "kx"+string(rec.Value)[2:] {
			t.Errorf("replayed %q (key %q), want only the x-* dead letters with their keys", rec.Value, rec.Key)
		}
	}
	if len(replayed) != 5 {
		t.Fatalf("%d distinct records replayed to orders, want 5: %v", len(replayed), replayed)
	}
	testutil.WaitFor(t, 20*time.Second, "the worker to handle the 5 replayed records", func() bool {
		for v := range replayed {
			if d.count(v) != 1 {
				return false
			}
		}
		return true
	})
	if committed, _ := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq"); sum(committed) != 11 {
		t.Errorf("replay group committed %v, want the dead-letter topic's end (11 records)", committed)
	}

	again := e.ok(args...)
	if !strings.Contains(again.stdout, "replayed 0 dead letters") {
		t.Errorf("second replay printed %q", again.stdout)
	}
	grew := 0
	for _, rec := range e.readTopic("orders", false) { // aborted records too
		if rec.Offset >= before[rec.Partition] {
			grew++
		}
	}
	if grew != 5 {
		t.Errorf("orders grew by %d records in all, want 5: the second replay sent again", grew)
	}
}

func headersOfRead(r kafkatest.ReadRecord) []handler.Header {
	var out []handler.Header
	for k, v := range r.Headers {
		out = append(out, handler.Header{Key: k, Value: []byte(v)})
	}
	return out
}

// TestReplayResumes interrupts a paced replay after it sent some records
// and checks that running it again sends the rest, nothing twice.
func TestReplayResumes(t *testing.T) {
	e := newEnv(t)
	d := deadLetterTen(t, e)
	d.fixed.Store(true)
	before, _ := e.cluster.EndOffsets(e.ctx, "orders")
	args := []string{"dlq", "replay", "--dlq-topic", "orders.g.dlq", "--rate", "5/s", "--brokers", e.cluster.Addrs()[0]}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var out, errb testutil.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), &out, &errb) }()
	testutil.WaitFor(t, 20*time.Second, "the replay to send 2 records", func() bool {
		return len(e.readTopic("orders", false))-15 >= 2
	})
	cancel()
	if code := <-done; code == 0 || !strings.Contains(errb.String(), "interrupted after sending") || !strings.Contains(errb.String(), "run the same command to resume") {
		t.Fatalf("interrupted replay: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	// Interrupted, the replay committed what it had sent.
	first := int64(len(e.readTopic("orders", true)) - 15)
	if first >= 10 || first < 2 {
		t.Fatalf("the interrupted replay committed %d records, want 2 to 9", first)
	}

	r := e.ok("dlq", "replay", "--dlq-topic", "orders.g.dlq")
	if want := "replayed " + strconv.FormatInt(10-first, 10) + " dead letter(s)"; !strings.Contains(r.stdout, want) {
		t.Errorf("resumed replay printed %q, want %q", r.stdout, want)
	}
	recs := e.readTopic("orders", true)
	seen := map[string]int{}
	for _, rec := range recs {
		if rec.Offset >= before[rec.Partition] {
			seen[string(rec.Value)]++
		}
	}
	if len(seen) != 10 {
		t.Errorf("replayed %d distinct dead letters, want 10: %v", len(seen), seen)
	}
	for v, n := range seen {
		if n != 1 {
			t.Errorf("%s replayed %d times", v, n)
		}
	}
}
