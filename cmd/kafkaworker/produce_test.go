package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// produceExplicit writes n records numbered 0..n-1 to one partition.
func produceExplicit(t *testing.T, e *env, topic string, partition int32, n int) {
	t.Helper()
	var recs []kafkatest.Record
	for i := range n {
		recs = append(recs, kafkatest.Record{Topic: topic, Partition: partition, Explicit: true, Key: []byte("k"), Value: []byte{byte('a' + i)}})
	}
	if _, err := e.cluster.Produce(e.ctx, recs...); err != nil {
		t.Fatal(err)
	}
}

func TestProduce(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 4)
	r := e.runIn("k1:v1\nk2:v:2\n", "produce", "orders", "--key-separator", ":", "-H", "source=cli", "-H", "run=7", "-v")
	if r.code != 0 {
		t.Fatalf("produce: %s", r.stderr)
	}
	recs, err := e.cluster.ReadAll(e.ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("broker has %d records, want 2", len(recs))
	}
	byKey := map[string]kafkatest.ReadRecord{}
	for _, rec := range recs {
		byKey[string(rec.Key)] = rec
	}
	if v := string(byKey["k2"].Value); v != "v:2" {
		t.Errorf("k2's value = %q, want v:2 (split at the first separator)", v)
	}
	if h := byKey["k1"].Headers; h["source"] != "cli" || h["run"] != "7" {
		t.Errorf("k1's headers = %v", h)
	}
	// The key chooses the partition as the worker's producers hash it
	// (kafkatest hashes as sarama does): -v names where each landed.
	for _, rec := range recs {
		want := offsetText("orders", rec.Partition, rec.Offset)
		if !strings.Contains(r.stdout, strings.Replace(want, "@", " offset ", 1)) {
			t.Errorf("-v output %q lacks %s", r.stdout, want)
		}
	}
	if !strings.Contains(r.stderr, "produced 2 record(s)") {
		t.Errorf("stderr %q", r.stderr)
	}

	e.runIn("x\ny\n", "produce", "orders", "--partition", "3")
	end, _ := e.cluster.EndOffsets(e.ctx, "orders")
	if end[3] < 2 {
		t.Errorf("--partition 3: partition 3 ends at %d, want at least 2", end[3])
	}
}

func TestProduceBadInput(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 1)
	checkFailure(t, nil, e.runIn("k1:v1\nnosep\n", "produce", "orders", "--key-separator", ":"), "line 2 has no key separator")
	checkFailure(t, nil, e.runIn("v\n", "produce", "nope"), `topic "nope" does not exist`)
	checkFailure(t, nil, e.runIn("v\n", "produce", "orders", "--partition", "5"), "--partition 5")
	checkFailure(t, nil, e.runIn("v\n", "produce", "orders", "-H", "novalue"), `-H "novalue"`)
	if end, _ := e.cluster.EndOffsets(e.ctx, "orders"); end[0] != 0 {
		t.Errorf("bad input produced %d records", end[0])
	}
}

func TestConsume(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 2)
	produceExplicit(t, e, "orders", 0, 5)
	if _, err := e.cluster.Produce(e.ctx, kafkatest.Record{Topic: "orders", Partition: 1, Explicit: true,
		Key: []byte{0xff, 0x00}, Value: []byte("line\nbreak"), Headers: map[string]string{"h": "v"}}); err != nil {
		t.Fatal(err)
	}

	lines := jsonLines(t, e.ok("consume", "orders", "--format", "json").stdout)
	if len(lines) != 6 {
		t.Fatalf("consume read %d records, want 6 (it stops at the end offsets)", len(lines))
	}
	var bin consumed
	for _, l := range lines {
		if l.Partition == 1 {
			bin = l
		}
	}
	if bin.Key == nil || bin.Key.Base64 == nil || *bin.Key.Base64 != "/wA=" || bin.Value.Text == nil || *bin.Value.Text != "line\nbreak" {
		t.Errorf("binary key / text value record = %+v", bin)
	}
	if len(bin.Headers) != 1 || bin.Headers[0].Key != "h" || *bin.Headers[0].Value.Text != "v" {
		t.Errorf("headers = %+v", bin.Headers)
	}

	text := e.ok("consume", "orders", "--partition", "0", "--from", "2", "--count", "2").stdout
	if text != "0\t2\tk\tc\n0\t3\tk\td\n" {
		t.Errorf("--from 2 --count 2 printed %q", text)
	}
	if out := e.ok("consume", "orders", "--from", "newest").stdout; out != "" {
		t.Errorf("--from newest printed %q, want nothing", out)
	}
	if out := e.ok("consume", "orders", "--partition", "1").stdout; !strings.Contains(out, `"\xff\x00"`) || !strings.Contains(out, `"line\nbreak"`) {
		t.Errorf("text output does not quote binary and line breaks: %q", out)
	}
	// A time after every record starts at the end.
	if out := e.ok("consume", "orders", "--from", "2999-01-01T00:00:00Z").stdout; out != "" {
		t.Errorf("--from a future time printed %q", out)
	}
	if out := e.ok("consume", "orders", "--from", "2000-01-01T00:00:00Z", "--partition", "0", "--count", "1").stdout; out != "0\t0\tk\ta\n" {
		t.Errorf("--from a past time printed %q", out)
	}
}

func TestConsumeBadInput(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 1)
	e.fails([]string{"consume", "orders", "--from", "yesterday"}, `--from "yesterday"`, "RFC 3339")
	e.fails([]string{"consume", "nope"}, `topic "nope" does not exist`)
	e.fails([]string{"consume", "orders", "--format", "xml"}, `--format "xml"`)
}

func TestConsumeFollow(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", 1)
	var out, errb testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(e.ctx, []string{"consume", "orders", "--follow", "--count", "2", "--brokers", e.cluster.Addrs()[0]}, strings.NewReader(""), &out, &errb)
	}()
	// Records produced after the command started are printed, and
	// --count ends it.
	produceExplicit(t, e, "orders", 0, 2)
	if code := <-done; code != 0 {
		t.Fatalf("consume --follow: exit %d: %s", code, errb.String())
	}
	if out.String() != "0\t0\tk\ta\n0\t1\tk\tb\n" {
		t.Errorf("consume --follow printed %q", out.String())
	}
}

func jsonLines(t *testing.T, s string) []consumed {
	t.Helper()
	var out []consumed
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var c consumed
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, c)
	}
	return out
}
