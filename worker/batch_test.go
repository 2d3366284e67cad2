package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/outbox"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/middleware"
	"github.com/kafkaworker/kafkaworker/producer"
)

var noopBatch = handler.BatchHandlerFunc(func(context.Context, []*handler.Message) error { return nil })

func TestBatchSettingsAreReadAndChecked(t *testing.T) {
	t.Parallel()
	c, err := configFrom(merge(validEnv(), map[string]string{"WORKER_BATCH_MAX": "250", "WORKER_BATCH_WAIT": "0"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BatchMax != 250 || c.BatchWait != 0 {
		t.Fatalf("BatchMax %d, BatchWait %v: want 250 and 0 from the environment", c.BatchMax, c.BatchWait)
	}
	d := DefaultConfig()
	if d.BatchMax != 100 || d.BatchWait.String() != "100ms" {
		t.Fatalf("defaults BatchMax %d, BatchWait %v: want 100 and 100ms", d.BatchMax, d.BatchWait)
	}
	_, err = configFrom(merge(validEnv(), map[string]string{"WORKER_BATCH_MAX": "0", "WORKER_BATCH_WAIT": "-1s"}))
	wantProblems(t, err, "WORKER_BATCH_MAX=0: must be at least 1", "WORKER_BATCH_WAIT=-1s: negative")
	_, err = configFrom(merge(validEnv(), map[string]string{"WORKER_BATCH_MAX": "many"}))
	wantProblems(t, err, `WORKER_BATCH_MAX="many": cannot parse as a whole number`)
}

func TestNewBatchRejectsBadInput(t *testing.T) {
	t.Parallel()
	c, err := configFrom(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBatch(c, nil); err == nil || !strings.Contains(err.Error(), "handler is nil") {
		t.Fatalf("nil batch handler: %v", err)
	}
	big := c
	big.BatchMax, big.MaxInFlight = 500, 200
	_, err = NewBatch(big, noopBatch)
	wantProblems(t, err, "WORKER_BATCH_MAX=500 is more than WORKER_MAX_IN_FLIGHT=200")
	eos := c
	eos.ExactlyOnce = true
	_, err = NewBatch(eos, noopBatch)
	wantProblems(t, err, "WORKER_EXACTLY_ONCE=true with a batch handler: not supported yet")
	_, err = NewBatch(c, noopBatch, WithMiddleware(middleware.Recover()))
	wantProblems(t, err, "WithMiddleware with a batch handler")
	_, err = NewBatch(Config{}, noopBatch)
	wantProblems(t, err, "WORKER_CONCURRENCY")
	w, err := NewBatch(c, noopBatch)
	if err != nil {
		t.Fatal(err)
	}
	if w.batch == nil || w.batch.Max != 100 || w.batch.Wait != c.BatchWait {
		t.Fatalf("batch settings %+v, want Max 100 and the configured wait", w.batch)
	}
}

func TestProduceInABatchHandlerSaysItIsUnsupported(t *testing.T) {
	t.Parallel()
	ctx := outbox.InBatch(context.Background())
	err := Produce(ctx, &producer.Message{Topic: "out"})
	if !errors.Is(err, ErrProduceInBatch) {
		t.Fatalf("Produce in a batch handler's context: %v, want ErrProduceInBatch", err)
	}
	if !errors.Is(Produce(context.Background(), &producer.Message{Topic: "out"}), ErrNotInHandler) {
		t.Fatal("Produce outside a handler: want ErrNotInHandler")
	}
}

// Batch settings a Handler's worker ignores are logged, not passed over in
// silence; a batch worker, or the defaults, log nothing about them.
func TestUnusedBatchSettingsAreLogged(t *testing.T) {
	t.Parallel()
	c, err := configFrom(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	const msg = "WORKER_BATCH_MAX and WORKER_BATCH_WAIT apply to a batch handler only (worker.NewBatch); this worker runs a Handler (worker.New) and ignores them"
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	for _, tc := range []struct {
		name  string
		max   int
		batch bool
		warns int
	}{
		{"handler, defaults", 100, false, 0},
		{"handler, WORKER_BATCH_MAX set", 50, false, 1},
		{"batch handler, WORKER_BATCH_MAX set", 50, true, 0},
	} {
		var logs testutil.Logs
		cfg := c
		cfg.BatchMax = tc.max
		var w *Worker
		if tc.batch {
			w, err = NewBatch(cfg, noopBatch, WithLogger(logs.Logger()))
		} else {
			w, err = New(cfg, h, WithLogger(logs.Logger()))
		}
		if err != nil {
			t.Fatal(err)
		}
		w.warnUnusedBatchSettings()
		if got := len(logs.Find(slog.LevelWarn, msg)); got != tc.warns {
			t.Errorf("%s: %d warnings, want %d", tc.name, got, tc.warns)
		}
	}
}
