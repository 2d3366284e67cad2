package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/producer"
	"github.com/kafkaworker/kafkaworker/worker"
)

// emitter is a handler that produces two records per message ("<value>#a",
// "<value>#b", keyed like the input) and fails, after producing, the first
// delivery of every failEvery-th message, or panics there when panics is
// set. It counts its calls per input value.
type emitter struct {
	out       string
	failEvery int
	panics    bool

	mu    sync.Mutex
	calls map[string]int
}

func (e *emitter) Handle(ctx context.Context, m *handler.Message) error {
	for _, suffix := range []string{"#a", "#b"} {
		msg := &producer.Message{Topic: e.out, Key: m.Key, Value: append([]byte(string(m.Value)), suffix...),
			Headers: []handler.Header{{Key: "source-offset", Value: fmt.Appendf(nil, "%d", m.Offset)}}}
		if err := worker.Produce(ctx, msg); err != nil {
			return err
		}
	}
	e.mu.Lock()
	e.calls[string(m.Value)]++
	first := e.calls[string(m.Value)] == 1
	e.mu.Unlock()
	_, seq := parseValue(string(m.Value))
	if first && e.failEvery > 0 && seq%e.failEvery == 0 {
		if e.panics {
			panic("after producing")
		}
		return errors.New("failed after producing")
	}
	return nil
}

// outputTopic creates a topic of its own for a test's handler output.
func (b *testBundle) outputTopic(t *testing.T, partitions int32) string {
	t.Helper()
	out := uniqueName(t, "out")
	if err := b.cluster.CreateTopic(ctx(t), out, partitions); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkOutput reads the output topic and checks that each input value has
// exactly its two records, "#a" before "#b", every key's inputs in order,
// and returns how many records it read.
func checkOutput(t *testing.T, b *testBundle, out string, inputs int) int {
	t.Helper()
	recs, err := b.cluster.ReadAll(ctx(t), out)
	if err != nil {
		t.Fatal(err)
	}
	return checkOutputRecords(t, recs, inputs)
}

// checkOutputRecords is checkOutput's check of the records read.
func checkOutputRecords(t *testing.T, recs []kafkatest.ReadRecord, inputs int) int {
	t.Helper()
	seen := map[string]int{}
	last := map[string]string{} // key -> last value read
	for _, r := range recs {
		seen[string(r.Value)]++
		k := string(r.Key)
		if prev, ok := last[k]; ok && !outputFollows(prev, string(r.Value)) {
			t.Errorf("key %s: output %q after %q: out of order", k, r.Value, prev)
		}
		last[k] = string(r.Value)
	}
	for v, n := range seen {
		if n != 1 {
			t.Errorf("output %q written %d times, want once", v, n)
		}
	}
	if len(seen) != 2*inputs {
		t.Errorf("want %d distinct output records (2 per input), got %d", 2*inputs, len(seen))
	}
	return len(recs)
}

// outputFollows reports whether output next may follow prev within a key:
// the same input's "#b" after its "#a", or a later input's "#a" after "#b".
func outputFollows(prev, next string) bool {
	pv, ps, _ := strings.Cut(prev, "#")
	nv, ns, _ := strings.Cut(next, "#")
	_, pseq := parseValue(pv)
	_, nseq := parseValue(nv)
	return (nseq == pseq && ps == "a" && ns == "b") || (nseq == pseq+1 && ps == "b" && ns == "a")
}

// A handler's output is sent only when Handle returns nil: the output of a
// failed or panicking delivery is dropped, so a retried message emits once,
// and each key's output keeps the key's order.
func TestHandlerOutputOnlyFromSuccessfulDeliveries(t *testing.T) {
	t.Parallel()
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 4)
			out := b.outputTopic(t, 3)
			const n, keys = 600, 20
			b.produceKeyed(t, n, keys)
			e := &emitter{out: out, failEvery: 7, panics: panics, calls: map[string]int{}}
			start(t, b.config(), e)
			b.waitCommitted(t, 60*time.Second)
			if got := checkOutput(t, b, out, n); got != 2*n {
				t.Errorf("read %d output records, want %d", got, 2*n)
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			retried := 0
			for _, c := range e.calls {
				if c > 1 {
					retried++
				}
			}
			if want := keys * ((n/keys + 6) / 7); retried != want { // seq%7 == 0 within each key
				t.Fatalf("%d inputs were delivered more than once, want the %d whose first delivery failed", retried, want)
			}
		})
	}
}

// A send that fails (the output topic does not exist yet) keeps the message
// and its key waiting and its offset uncommitted, and is retried without
// running the handler again; once the topic exists the output arrives once.
func TestHandlerOutputSendFailureRetriesTheSendNotTheHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	out := uniqueName(t, "missing-out")
	const n, keys = 40, 4
	b.produceKeyed(t, n, keys)
	logs := &testutil.Logs{}
	e := &emitter{out: out, calls: map[string]int{}}
	start(t, b.config(), e, worker.WithLogger(logs.Logger()))
	testutil.WaitFor(t, 30*time.Second, "a failed send of handler output logged", func() bool {
		return len(logs.Find(slog.LevelError, "sending the handler's output failed; its offset stays uncommitted and the send is retried (the handler is not run again)")) > 0
	})
	if com, err := b.cluster.CommittedOffsets(ctx(t), b.group, b.topic); err != nil {
		t.Fatal(err)
	} else {
		for p, o := range com {
			if o > 0 {
				t.Fatalf("partition %d committed %d while the output of its first message is unsent", p, o)
			}
		}
	}
	if err := b.cluster.CreateTopic(ctx(t), out, 2); err != nil {
		t.Fatal(err)
	}
	b.waitCommitted(t, 60*time.Second)
	checkOutput(t, b, out, n)
	e.mu.Lock()
	defer e.mu.Unlock()
	for v, c := range e.calls {
		if c != 1 {
			t.Errorf("input %q handled %d times: a failed send must not run the handler again", v, c)
		}
	}
	if len(e.calls) != n {
		t.Errorf("handled %d distinct inputs, want %d", len(e.calls), n)
	}
}

// Produce outside a running handler is refused with ErrNotInHandler, and a
// message without a topic with an error naming the field.
func TestProduceOutsideAHandler(t *testing.T) {
	t.Parallel()
	if err := worker.Produce(context.Background(), &producer.Message{Topic: "t"}); !errors.Is(err, worker.ErrNotInHandler) {
		t.Fatalf("Produce with a context that is no handler's: want ErrNotInHandler, got %v", err)
	}
	if err := worker.Produce(context.Background(), &producer.Message{}); err == nil || !strings.Contains(err.Error(), "Topic") {
		t.Fatalf("Produce without a topic: want an error naming Topic, got %v", err)
	}
}
