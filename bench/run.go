package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

// workFunc is a scenario's business logic, the same for both sides: the raw
// sarama loop calls it with the sarama message's key and value, the worker's
// handler with the handler.Message's.
type workFunc func(ctx context.Context, key, value []byte)

// batchFunc is a batch scenario's business logic for the worker's batch
// handler (worker.NewBatch): one call per batch.
type batchFunc func(ctx context.Context, msgs []*handler.Message)

// spec describes one timed consumption of a whole topic.
type spec struct {
	topic       string
	n           int // messages in the topic, all of which must be handled
	work        workFunc
	concurrency int             // worker only
	ordering    worker.Ordering // worker only; default key
	timeout     time.Duration   // give up after this long
	// batch, when set, runs the worker with a batch handler (worker.NewBatch)
	// calling it once per batch of at most batchMax messages, cut batchWait
	// after the first (0 for either: the default, WORKER_BATCH_MAX and
	// WORKER_BATCH_WAIT); work is then unused on the worker side.
	batch     batchFunc
	batchMax  int
	batchWait time.Duration
}

// measurement is the outcome of one timed consumption.
type measurement struct {
	side  string
	n     int
	total time.Duration // Run (or Consume) start until the handler counted all n
	// startup is Run start until the first message reached the handler:
	// connecting, joining the group, fetching offsets and the first fetch.
	startup time.Duration
	// commitLag is how long after the last message was handled the group's
	// committed offsets reached the topic's end offsets (bounded by the 1s
	// auto-commit interval); committed says whether they did at all.
	commitLag time.Duration
	committed bool
	// cpu is the CPU time (user + system) the process used from the start
	// until the n-th message was handled. In-process (io, keys) that is the
	// consumer under test and the embedded broker serving its fetches; for
	// a child run (noop, partitions) it is the consumer's alone.
	cpu time.Duration

	// Child runs only (see childRun): the child's snapshots by name
	// (snapStart, snapJoined, snapFirst, snapLast) and the parent's CPU
	// time at each; see window.
	snaps     map[string]childSnapshot
	brokerCPU map[string]time.Duration
	// hwm is the consumer process's peak RSS (VmHWM, kB), read after the
	// commits reached the end offsets.
	hwm int64
}

// cpuPerMillion is the process CPU time spent per million messages.
func (m measurement) cpuPerMillion() time.Duration {
	return time.Duration(float64(m.cpu) * 1e6 / float64(m.n))
}

// rate is messages per second over the whole run, startup included.
func (m measurement) rate() float64 { return float64(m.n) / m.total.Seconds() }

// steadyRate is messages per second from the first handled message to the
// last, which leaves the group join out.
func (m measurement) steadyRate() float64 {
	d := m.total - m.startup
	if d <= 0 || m.n < 2 {
		return m.rate()
	}
	return float64(m.n-1) / d.Seconds()
}

// tally counts handled messages and notes when the first one and the n-th
// one were handled. add is safe for concurrent use and cheap enough not to
// matter next to a no-op handler.
type tally struct {
	target int64
	start  time.Time
	cpu0   time.Duration // process CPU time at start
	cpu    time.Duration // process CPU time used until n reached target
	n      atomic.Int64
	first  atomic.Int64 // nanoseconds after start; 0 until the first message
	last   atomic.Int64 // nanoseconds after start when n reached target
	done   chan struct{}
}

func newTally(n int) *tally {
	return &tally{target: int64(n), start: time.Now(), cpu0: cpuTime(), done: make(chan struct{})}
}

// add counts one handled message.
func (t *tally) add() { t.addN(1) }

// addN counts n handled messages (a batch) at once.
func (t *tally) addN(n int) {
	if t.first.Load() == 0 {
		t.first.CompareAndSwap(0, int64(time.Since(t.start)))
	}
	if now := t.n.Add(int64(n)); now >= t.target && now-int64(n) < t.target {
		t.last.Store(int64(time.Since(t.start)))
		t.cpu = cpuTime() - t.cpu0
		close(t.done)
	}
}

// runWorker consumes s.topic with a fresh group through kafkaworker and
// measures it.
func (b *bench) runWorker(ctx context.Context, s spec) (measurement, error) {
	cfg := worker.DefaultConfig()
	cfg.Brokers = b.cluster.Addrs()
	cfg.GroupID = b.name("worker")
	cfg.Topics = []string{s.topic}
	if s.concurrency > 0 {
		cfg.Concurrency = s.concurrency
	}
	cfg.Ordering = worker.OrderByKey
	if s.ordering != "" {
		cfg.Ordering = s.ordering
	}
	var t *tally
	var w *worker.Worker
	var err error
	if s.batch != nil {
		if s.batchMax > 0 {
			cfg.BatchMax = s.batchMax
		}
		if s.batchWait > 0 {
			cfg.BatchWait = s.batchWait
		}
		bh := handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
			s.batch(ctx, msgs)
			t.addN(len(msgs))
			return nil
		})
		w, err = worker.NewBatch(cfg, bh, worker.WithLogger(slog.New(slog.DiscardHandler)))
	} else {
		h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
			s.work(ctx, m.Key, m.Value)
			t.add()
			return nil
		})
		w, err = worker.New(cfg, h, worker.WithLogger(slog.New(slog.DiscardHandler)))
	}
	if err != nil {
		return measurement{}, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	t = newTally(s.n)
	// The pprof label follows every goroutine Run starts (sarama's too), so
	// a -cpuprofile can be split by side: go tool pprof -tagfocus=side=kafkaworker.
	go pprof.Do(runCtx, pprof.Labels("side", "kafkaworker"), func(ctx context.Context) { errc <- w.Run(ctx) })
	stop := stopper(cancel, errc, "worker.Run")
	return b.await(ctx, "kafkaworker", cfg.GroupID, s, t, errc, stop)
}

// await waits for t to count every message of s (or for the consumer to
// fail, or s.timeout), then for the group's commits to reach the end
// offsets, stops the consumer and returns the measurement.
func (b *bench) await(ctx context.Context, side, group string, s spec, t *tally, errc <-chan error, stop func() error) (measurement, error) {
	timeout := s.timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.done:
	case err := <-errc:
		return measurement{}, fmt.Errorf("%s stopped after %d of %d messages: %v", side, t.n.Load(), s.n, err)
	case <-timer.C:
		_ = stop()
		return measurement{}, fmt.Errorf("%s handled only %d of %d messages in %v", side, t.n.Load(), s.n, timeout)
	}
	m := measurement{
		side: side, n: s.n,
		total:   time.Duration(t.last.Load()),
		startup: time.Duration(t.first.Load()),
		cpu:     t.cpu,
	}
	handledAt := t.start.Add(m.total)
	m.committed = b.waitCommitted(ctx, group, s.topic, 10*time.Second)
	m.commitLag = time.Since(handledAt)
	if err := stop(); err != nil {
		return measurement{}, fmt.Errorf("%s: stopping: %w", side, err)
	}
	return m, nil
}

// waitCommitted polls until group's committed offsets on topic equal the
// topic's end offsets, for at most limit, and reports whether they did.
func (b *bench) waitCommitted(ctx context.Context, group, topic string, limit time.Duration) bool {
	end, err := b.cluster.EndOffsets(ctx, topic)
	if err != nil {
		progress("end offsets of %s: %v", topic, err)
		return false
	}
	deadline := time.Now().Add(limit)
	for {
		committed, err := b.cluster.CommittedOffsets(ctx, group, topic)
		if err == nil && reached(committed, end) {
			return true
		}
		if time.Now().After(deadline) {
			progress("group %s: committed %v, end %v (err %v)", group, committed, end, err)
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reached reports whether every partition's committed offset is its end.
func reached(committed, end map[int32]int64) bool {
	for p, e := range end {
		if e > 0 && committed[p] != e {
			return false
		}
	}
	return true
}

// medianOf returns the median of f over ms.
func medianOf(ms []measurement, f func(measurement) float64) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = f(m)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// alternate runs raw and worker reps times each, alternating (raw first),
// and returns both sides' measurements.
func (b *bench) alternate(ctx context.Context, scenario string, raw, wrk spec) (raws, wrks []measurement, err error) {
	reps := b.repsFor(3)
	for i := range reps {
		for _, side := range []string{"raw sarama", "kafkaworker"} {
			var m measurement
			if side == "raw sarama" {
				m, err = b.runRaw(ctx, raw)
			} else {
				m, err = b.runWorker(ctx, wrk)
			}
			if err != nil {
				return nil, nil, err
			}
			progress("%s run %d/%d %-11s: %s msgs in %s = %s msgs/s (join %s, steady %s msgs/s, process CPU (consumer + broker) %s/1M msgs, commit at end: %v after +%s)",
				scenario, i+1, reps, side, count(m.n), dur(m.total), rate(m.rate()), dur(m.startup),
				rate(m.steadyRate()), dur(m.cpuPerMillion()), m.committed, dur(m.commitLag))
			if side == "raw sarama" {
				raws = append(raws, m)
			} else {
				wrks = append(wrks, m)
			}
		}
	}
	return raws, wrks, nil
}

// commitSummary says whether the group's commits reached the end offsets
// in every run, and the worst lag after the last message was handled.
func commitSummary(ms []measurement) string {
	var worst time.Duration
	for _, m := range ms {
		if !m.committed {
			return "**no** (see stderr)"
		}
		worst = max(worst, m.commitLag)
	}
	return fmt.Sprintf("yes, ≤ %s after last handled", dur(worst))
}

// rates lists each run's rate.
func rates(ms []measurement) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = rate(m.rate())
	}
	return fmt.Sprint(s)
}

// stopper returns the function that cancels a consumer and waits up to a
// minute for its result on errc.
func stopper(cancel context.CancelFunc, errc <-chan error, what string) func() error {
	return func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(time.Minute):
			return fmt.Errorf("%s did not return within a minute of cancelling", what)
		}
	}
}
