package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/worker"
)

// stopBound is how much longer than WORKER_SHUTDOWN_TIMEOUT a stop may
// take, whatever the broker or the handlers do (README, "A stop that
// always ends").
const stopBound = 5 * time.Second

// stopTimed cancels r and returns how long Run took to return, failing the
// test if it returned an error.
func (r *running) stopTimed(t *testing.T) time.Duration {
	t.Helper()
	began := time.Now()
	r.cancel()
	r.cancel = nil // the cleanup's stop has nothing left to do
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v, want nil after a stop", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Run did not return within 2 minutes of cancellation")
	}
	return time.Since(began)
}

// silenceOffsetCommits makes the broker accept OffsetCommit requests and
// never answer them while silent is set: a half-dead coordinator.
func silenceOffsetCommits(b *testBundle, silent *atomic.Bool, swallowed *atomic.Int64) {
	fake := b.cluster.Fake()
	fake.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if !silent.Load() {
			return nil, nil, false
		}
		swallowed.Add(1)
		return nil, nil, true // handled, and no answer is ever written
	})
}

// A coordinator that stops answering OffsetCommit cannot hold a stop up:
// every commit has a deadline, the partitions' final commits share one,
// and Run returns within WORKER_SHUTDOWN_TIMEOUT + 5s. Nothing is lost:
// what the final commits could not cover is handled again after the
// coordinator recovers.
func TestStopEndsWhenCoordinatorNeverAnswersCommits(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	requireFake(t, b)
	var silent atomic.Bool
	var swallowed atomic.Int64
	silenceOffsetCommits(b, &silent, &swallowed)

	const first, second = 400, 40
	b.produceKeyed(t, first, 40)
	rec := newRecorder()
	rec.allowRedelivery = true
	cfg := b.config()
	cfg.ShutdownTimeout = 5 * time.Second
	w := start(t, cfg, rec)
	testutil.WaitFor(t, 30*time.Second, "the first batch handled", func() bool { return rec.handled.Load() >= first })
	b.waitCommitted(t, 30*time.Second)

	silent.Store(true)
	err := b.cluster.ProduceN(ctx(t), b.topic, second, func(i int) ([]byte, []byte) {
		return fmt.Appendf(nil, "s%d", i), fmt.Appendf(nil, "s%d/0", i) // keys of their own
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the second batch handled", func() bool { return rec.handled.Load() >= first+second })
	testutil.WaitFor(t, 10*time.Second, "a commit swallowed", func() bool { return swallowed.Load() > 0 })
	if took := w.stopTimed(t); took > cfg.ShutdownTimeout+stopBound {
		t.Fatalf("Run took %v to return with a silent coordinator; want at most %v", took, cfg.ShutdownTimeout+stopBound)
	}

	silent.Store(false)
	w2 := start(t, cfg, rec)
	b.waitCommitted(t, 30*time.Second)
	w2.stop(t)
	if distinct, _ := rec.check(t); distinct != first+second {
		t.Fatalf("handled %d distinct messages, want %d", distinct, first+second)
	}
}

// A handler that ignores its cancelled context is waited for once, until
// WORKER_SHUTDOWN_TIMEOUT, not a second time when the pool stops: Run
// returns well before twice the timeout.
func TestStopWaitsForAHandlerIgnoringItsContextOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produceKeyed(t, 1, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var entered atomic.Bool
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		entered.Store(true)
		<-release // ignores ctx
		return nil
	})
	cfg := b.config()
	cfg.ShutdownTimeout = 3 * time.Second
	w := start(t, cfg, h)
	testutil.WaitFor(t, 30*time.Second, "the handler running", entered.Load)
	took := w.stopTimed(t)
	if took < cfg.ShutdownTimeout {
		t.Fatalf("Run returned after %v, before the shutdown timeout %v gave the handler its chance", took, cfg.ShutdownTimeout)
	}
	if limit := cfg.ShutdownTimeout * 3 / 2; took > limit {
		t.Fatalf("Run took %v with a handler ignoring its context; want under %v (the handler must be waited for once)", took, limit)
	}
}

// A failure that no retry can cure ends Run with a *worker.FatalError that
// names the Kafka error and what to do, after the usual shutdown, instead
// of rejoining forever.
func TestGroupAuthorizationFailureIsFatal(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	requireFake(t, b)
	fake := b.cluster.Fake()
	fake.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil, true
	})
	w, err := worker.New(b.config(), newRecorder(), worker.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run kept retrying a group authorization failure for 30s")
	}
	var fe *worker.FatalError
	if !errors.As(err, &fe) || !errors.Is(err, sarama.ErrGroupAuthorizationFailed) {
		t.Fatalf("Run returned %v; want a *worker.FatalError wrapping %v", err, sarama.ErrGroupAuthorizationFailed)
	}
	if fe.Hint == "" {
		t.Fatalf("FatalError %q says nothing about what to do", err)
	}
}

// A consumed topic deleted while the worker runs, and not re-created, ends
// Run with a *worker.FatalError naming it (after missing for a few seconds)
// instead of a rejoin loop; the worker never re-creates it itself.
func TestDeletedTopicIsFatal(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	w, err := worker.New(b.config(), newRecorder(), worker.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	b.waitStartCommitted(t, b.topic, 2)
	if err := b.cluster.DeleteTopic(ctx(t), b.topic); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run kept going for 60s after its only topic was deleted")
	}
	var fe *worker.FatalError
	if !errors.As(err, &fe) || !errors.Is(err, sarama.ErrUnknownTopicOrPartition) || !strings.Contains(err.Error(), strconv.Quote(b.topic)) {
		t.Fatalf("Run returned %v; want a *worker.FatalError naming %q", err, b.topic)
	}
	var mt *worker.MissingTopicsError
	if !errors.As(err, &mt) || !slices.Equal(mt.Topics, []string{b.topic}) || fe.Hint == "" {
		t.Fatalf("Run returned %v; want a FatalError with a hint around a *worker.MissingTopicsError listing %q", err, b.topic)
	}
	if end, err := b.cluster.EndOffsets(ctx(t), b.topic); err == nil && len(end) > 0 {
		t.Fatalf("the deleted topic exists again (%v): the worker must not re-create it", end)
	}
}
