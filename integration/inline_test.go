package integration

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The tests in this file attack the README's guarantees where inline runs
// (internal/engine/inline.go) change how a message runs: a fast handler
// runs on its partition's dispatching goroutine, a slow stretch sends the
// partition to the pool for a cool-down, and a handler that holds the
// dispatching goroutine for 2ms is handed off (its stretch's unstarted
// messages go to the pool and a new goroutine dispatches on). Their
// handler is fast (a few atomics) with occasional blocking calls longer
// than the handoff threshold, and each test checks, by looking at the
// handler's own stack, that inline runs and handoffs really happened.

// handoffSleep is how long a blocking call holds its goroutine: past the
// engine's handoffAfter (2ms), so that a blocking call made inline is
// handed off.
const handoffSleep = 3 * time.Millisecond

// inlineMsg is what a test record is: the index of its key within its
// partition, and its place in that key's sequence.
type inlineMsg struct{ key, seq int32 }

// inlineRig is a topic filled with records laid out per partition, and a
// fast handler that counts every delivery by partition and offset and
// checks the ordering mode's promise without taking a lock.
type inlineRig struct {
	b     *testBundle
	keys  int           // keys per partition
	info  [][]inlineMsg // by partition, by offset
	total int

	ordering worker.Ordering
	slow     func(p int32, off int64) time.Duration // a blocking call's length, or 0
	// special handles the special records, on the source topic or a
	// retry tier, after the rig's blocking call if any.
	special func(ctx context.Context, m *handler.Message) error

	recs [][]kafkatest.Record // by partition, by offset
	sent []int                // records produced, by partition

	count    [][]atomic.Int32 // deliveries, by partition, by offset
	next     []atomic.Int32   // key mode: the next seq, by partition*keys+key
	lastOff  []atomic.Int64   // partition mode: the last offset handled, by partition
	active   []atomic.Int32   // partition mode: handlers running, by partition
	handled  atomic.Int64     // distinct messages handled
	calls    atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64

	// blockInline makes every blockInline-th sampled call found running
	// inline a blocking call (handoffSleep), so that handoffs happen
	// however rarely inline runs do (under -race a message takes longer
	// than the engine's 5µs, so most stretches are judged slow).
	blockInline int64
	// hold[p], once armed, makes the next sampled call of partition p
	// found running inline signal held and block for holdFor, ignoring its
	// context.
	hold    []atomic.Bool
	held    chan int32
	holdFor time.Duration

	inline     atomic.Int64 // sampled calls that ran inline
	slowCalls  atomic.Int64
	slowInline atomic.Int64 // blocking calls that ran inline: each one is handed off

	mu   sync.Mutex
	errs []string
}

// newInlineRig creates a topic of parts partitions holding perPart records
// each, over keys keys per partition (key k of partition p is "p<p>-k<k>").
func newInlineRig(t *testing.T, parts, perPart, keys int, ordering worker.Ordering) *inlineRig {
	t.Helper()
	return newInlineRigSpecial(t, parts, perPart, keys, ordering, 0)
}

// newInlineRigSpecial is newInlineRig where every specialEvery-th record
// of a partition (if specialEvery > 0) is special: a key of its own
// ("p<p>-s<i>", value "special-p<p>-<i>"), left to the test's handler
// (special) and not counted by the rig.
func newInlineRigSpecial(t *testing.T, parts, perPart, keys int, ordering worker.Ordering, specialEvery int) *inlineRig {
	t.Helper()
	r := newInlineRigLazy(t, parts, perPart, keys, ordering, specialEvery)
	r.produceNext(t, perPart)
	return r
}

// newInlineRigLazy is newInlineRigSpecial producing nothing yet: see
// produceNext. The layout is fixed in advance (the topic is new, so record
// i of partition p lands at offset i), so that the handler reads it
// without a lock.
func newInlineRigLazy(t *testing.T, parts, perPart, keys int, ordering worker.Ordering, specialEvery int) *inlineRig {
	t.Helper()
	b := setup(t, int32(parts))
	r := &inlineRig{b: b, keys: keys, total: parts * perPart, ordering: ordering,
		info: make([][]inlineMsg, parts), count: make([][]atomic.Int32, parts),
		next: make([]atomic.Int32, parts*keys), lastOff: make([]atomic.Int64, parts), active: make([]atomic.Int32, parts),
		recs: make([][]kafkatest.Record, parts), sent: make([]int, parts),
		slow: func(int32, int64) time.Duration { return 0 }, blockInline: 3, hold: make([]atomic.Bool, parts), held: make(chan int32, 4*parts), holdFor: 100 * time.Millisecond}
	for p := range parts {
		r.info[p] = make([]inlineMsg, perPart)
		r.count[p] = make([]atomic.Int32, perPart)
		r.lastOff[p].Store(-1)
		seq := make([]int32, keys)
		for i := range perPart {
			if specialEvery > 0 && i%specialEvery == specialEvery/2 {
				r.recs[p] = append(r.recs[p], kafkatest.Record{Topic: b.topic, Explicit: true, Partition: int32(p),
					Key: fmt.Appendf(nil, "p%d-s%d", p, i), Value: fmt.Appendf(nil, "special-p%d-%d", p, i)})
				r.info[p][i] = inlineMsg{key: -1}
				r.total--
				continue
			}
			k := i % keys
			r.recs[p] = append(r.recs[p], kafkatest.Record{Topic: b.topic, Explicit: true, Partition: int32(p),
				Key: fmt.Appendf(nil, "p%d-k%d", p, k), Value: fmt.Appendf(nil, "p%d-k%d/%d", p, k, seq[k])})
			r.info[p][i] = inlineMsg{key: int32(k), seq: seq[k]}
			seq[k]++
		}
	}
	return r
}

// produceNext produces the next n records of every partition (fewer where
// fewer are left) and reports whether any were left.
func (r *inlineRig) produceNext(t *testing.T, n int) bool {
	t.Helper()
	var recs []kafkatest.Record
	var want []int64
	for p := range r.recs {
		to := min(r.sent[p]+n, len(r.recs[p]))
		recs = append(recs, r.recs[p][r.sent[p]:to]...)
		for i := r.sent[p]; i < to; i++ {
			want = append(want, int64(i))
		}
		r.sent[p] = to
	}
	if len(recs) == 0 {
		return false
	}
	out, err := r.b.cluster.Produce(ctx(t), recs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Partition != recs[i].Partition || o.Offset != want[i] {
			t.Fatalf("record %s landed at p%d@%d, want p%d@%d", recs[i].Value, o.Partition, o.Offset, recs[i].Partition, want[i])
		}
	}
	return true
}

// produced is how many records (not special) were produced so far.
func (r *inlineRig) produced() int64 {
	var n int64
	for p := range r.recs {
		for i := range r.sent[p] {
			if r.info[p][i].key >= 0 {
				n++
			}
		}
	}
	return n
}

// feedUntil produces n more records per partition each time the handled
// ones come within n of the produced ones, until cond holds; it fails the
// test if the records run out first or after timeout.
func (r *inlineRig) feedUntil(t *testing.T, n int, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if r.handled.Load()+int64(n) >= r.produced() && !r.produceNext(t, n) {
			t.Fatalf("every record produced and %d handled before %s", r.handled.Load(), what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(testutil.PollInterval) // polling a condition, as testutil.WaitFor does
	}
}

// config is the bundle's test configuration with the rig's ordering.
func (r *inlineRig) config() worker.Config {
	c := r.b.config()
	c.Ordering = r.ordering
	return c
}

func (r *inlineRig) failf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// onInline reports whether the calling handler runs on a dispatching
// goroutine (a stretch or a direct run) rather than on a pool goroutine.
func onInline() bool {
	var pcs [64]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs[:])])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, "engine.(*inlineRun).stretch") || strings.HasSuffix(f.Function, "engine.(*inlineRun).runDirect") {
			return true
		}
		if !more {
			return false
		}
	}
}

func (r *inlineRig) Handle(ctx context.Context, m *handler.Message) error {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for p := r.peak.Load(); n > p && !r.peak.CompareAndSwap(p, n); p = r.peak.Load() {
	}
	p, off := m.Partition, m.Offset
	if m.Topic != r.b.topic {
		return r.special(ctx, m) // a retry tier's
	}
	if int(p) >= len(r.info) || off < 0 || off >= int64(len(r.info[p])) {
		r.failf("unexpected message p%d@%d", p, off)
		return nil
	}
	if r.ordering == worker.OrderByPartition {
		if a := r.active[p].Add(1); a > 1 {
			r.failf("partition mode: p%d ran %d handlers at once", p, a)
		}
		defer r.active[p].Add(-1)
		if last := r.lastOff[p].Swap(off); off != last+1 {
			r.failf("partition mode: p%d handled offset %d after %d", p, off, last)
		}
	}
	d := r.slow(p, off)
	if r.calls.Add(1)%4 == 0 && onInline() {
		switch n := r.inline.Add(1); {
		case r.hold[p].CompareAndSwap(true, false):
			r.held <- p
			d = r.holdFor
		case r.blockInline > 0 && n%r.blockInline == 0:
			d = max(d, handoffSleep)
		}
	}
	if d > 0 {
		r.slowCalls.Add(1)
		if onInline() {
			r.slowInline.Add(1)
		}
		time.Sleep(d) // a blocking call that ignores ctx
	}
	if r.info[p][off].key < 0 {
		return r.special(ctx, m)
	}
	if r.ordering == worker.OrderByKey {
		mi := r.info[p][off]
		g := int(p)*r.keys + int(mi.key)
		if want := r.next[g].Load(); mi.seq != want {
			r.failf("key p%d-k%d: got seq %d, want %d (p%d@%d)", p, mi.key, mi.seq, want, p, off)
		}
		r.next[g].Store(mi.seq + 1)
	}
	if r.count[p][off].Add(1) == 1 {
		r.handled.Add(1)
	}
	return nil
}

// waitAll waits until every record was handled and the group committed at
// the end of every partition.
func (r *inlineRig) waitAll(t *testing.T) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, "every record handled", func() bool { return r.handled.Load() >= int64(r.total) })
	r.b.waitCommitted(t, 30*time.Second)
}

// check fails the test on any violation the handler saw, on a record never
// handled, and on a record handled more than once.
func (r *inlineRig) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	errs := r.errs
	r.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d violations, first: %s", len(errs), strings.Join(errs[:min(5, len(errs))], "; "))
	}
	var lost, twice []string
	for p := range r.count {
		for off := range r.count[p] {
			if r.info[p][off].key < 0 {
				continue
			}
			switch c := r.count[p][off].Load(); {
			case c == 0:
				lost = append(lost, fmt.Sprintf("p%d@%d", p, off))
			case c > 1:
				twice = append(twice, fmt.Sprintf("p%d@%d×%d", p, off, c))
			}
		}
	}
	if len(lost) > 0 || len(twice) > 0 {
		t.Fatalf("%d records never handled (first %v), %d handled more than once (first %v)",
			len(lost), lost[:min(5, len(lost))], len(twice), twice[:min(5, len(twice))])
	}
}

// sawInline fails the test unless inline runs, and blocking calls made
// inline (handoffs), happened: without them it tests nothing of inline.go.
func (r *inlineRig) sawInline(t *testing.T) {
	t.Helper()
	t.Logf("calls %d, sampled inline %d; blocking calls %d, of them inline (handed off) %d; peak concurrency %d",
		r.calls.Load(), r.inline.Load(), r.slowCalls.Load(), r.slowInline.Load(), r.peak.Load())
	if r.inline.Load() == 0 || r.slowInline.Load() == 0 {
		t.Fatalf("inline runs seen on %d sampled calls, handoffs on %d blocking calls: the test did not exercise inline runs",
			r.inline.Load(), r.slowInline.Load())
	}
}

// armHold arms the hold on every partition.
func (r *inlineRig) armHold() {
	for p := range r.hold {
		r.hold[p].Store(true)
	}
}

// disarmHold disarms the hold and forgets the holds signalled.
func (r *inlineRig) disarmHold() {
	for p := range r.hold {
		r.hold[p].Store(false)
	}
	for {
		select {
		case <-r.held:
		default:
			return
		}
	}
}

// waitHeld waits until, the hold armed, a handler running inline holds its
// dispatching goroutine, and returns its partition.
func (r *inlineRig) waitHeld(t *testing.T) int32 {
	t.Helper()
	select {
	case p := <-r.held:
		return p
	case <-time.After(20 * time.Second):
		t.Fatalf("no handler ran inline within 20s of arming the hold (handled %d of %d, calls %d, inline %d)",
			r.handled.Load(), r.total, r.calls.Load(), r.inline.Load())
	}
	return -1
}

// everyNth makes every n-th offset of each partition (starting at first) a
// blocking call of d.
func everyNth(n, first int64, d time.Duration) func(int32, int64) time.Duration {
	return func(_ int32, off int64) time.Duration {
		if off%n == first {
			return d
		}
		return 0
	}
}

// A fast handler with blocking calls that get handed off, stopped cleanly
// three times mid-stream: each stop ends within its budget, and across the
// restarts every record is handled exactly once, each key in order.
// Attacks: a stop while a handed-off handler still runs on the old
// dispatching goroutine (drain must count it, partition.running) and a new
// one dispatches; the final commit must not cover a message the handoff
// sent to the pool that never ran, nor miss one the old goroutine ran.
func TestInlineCleanStopsWithHandoffs(t *testing.T) {
	t.Parallel()
	r := newInlineRig(t, 4, 3000, 16, worker.OrderByKey)
	r.slow = everyNth(150, 7, handoffSleep)
	cfg := r.config()
	cfg.Concurrency = 8
	cfg.ShutdownTimeout = 5 * time.Second
	// A new worker's dispatchers start inline: the hold, armed before each
	// start, catches a handler running inline, and the stop comes while it
	// holds its dispatching goroutine (and, after 2ms, has been handed off).
	r.stopWhileHeld(t, cfg, 8)
	r.runToEnd(t, cfg)
}

// stopWhileHeld starts a worker and stops it cleanly while a handler holds
// its dispatching goroutine inline, n times: each stop ends within its
// budget and leaves no handler running.
func (r *inlineRig) stopWhileHeld(t *testing.T, cfg worker.Config, n int) {
	t.Helper()
	for range n {
		r.armHold()
		w := start(t, cfg, r)
		r.waitHeld(t)
		r.disarmHold()
		if took := w.stopTimed(t); took > cfg.ShutdownTimeout+stopBound {
			t.Fatalf("Run took %v to stop; want at most %v", took, cfg.ShutdownTimeout+stopBound)
		}
		if r.inFlight.Load() != 0 {
			t.Fatalf("%d handlers still running after Run returned from a clean stop", r.inFlight.Load())
		}
	}
}

// runToEnd runs a worker until every record is handled, stops it, and
// checks the rig's promises and that inline runs happened.
func (r *inlineRig) runToEnd(t *testing.T, cfg worker.Config) {
	t.Helper()
	w := start(t, cfg, r)
	r.waitAll(t)
	w.stop(t)
	r.check(t)
	r.sawInline(t)
}

// A second worker joins (cooperative-sticky, the default) while handlers
// hold their dispatching goroutines inline and are handed off, and later
// the first worker leaves while it happens again: across both handovers
// each key is handled in order and every record exactly once. Attacks: a
// revocation, which sarama signals only by closing Messages(), reaching a
// partition whose dispatching moved to a new goroutine; the revoke drain
// counting the old goroutine's handler; the final commit of the revoked
// partition covering exactly what ran.
func TestInlineCooperativeRebalanceWithHandoffs(t *testing.T) {
	t.Parallel()
	r := newInlineRigLazy(t, 6, 3000, 12, worker.OrderByKey, 0)
	r.slow = everyNth(200, 11, handoffSleep)
	r.holdFor = time.Second
	cfg := r.config()
	cfg.Concurrency = 8
	if cfg.RebalanceStrategy != worker.StrategyCooperativeSticky {
		t.Fatalf("default strategy is %q; this test is for cooperative-sticky", cfg.RebalanceStrategy)
	}
	var byW2 atomic.Int64
	h2 := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		byW2.Add(1)
		return r.Handle(ctx, m)
	})
	const wave = 100 // records per partition the feeding keeps ahead of the handling
	r.produceNext(t, wave)
	r.armHold()
	w1 := start(t, cfg, r)
	r.waitHeld(t)
	// w2 joins while a handler of w1 holds its dispatching goroutine; the
	// partitions it gets start inline, and are held too.
	w2 := start(t, cfg, h2)
	r.feedUntil(t, wave, 30*time.Second, "w2 handling", func() bool { return byW2.Load() > 0 })
	r.feedUntil(t, wave, 30*time.Second, "w2 handling more", func() bool { return byW2.Load() > 1000 })
	t.Logf("w1 leaves at %d handled (w2 %d)", r.handled.Load(), byW2.Load())
	r.disarmHold()
	r.armHold() // w1's partitions start inline on w2, and are held
	w1.stop(t)
	for r.produceNext(t, 1000) {
	}
	r.waitAll(t)
	r.disarmHold()
	w2.stop(t)
	r.check(t)
	r.sawInline(t)
}

// WORKER_CONCURRENCY of 1 and 2 over 8 partitions, with a handler mostly
// fast and sometimes blocking (inline, so handed off, or in the pool):
// never more handler calls at once than the setting, and everything
// handled exactly once, each key in order. Attacks the pool's seats: an
// inline run takes one, a handed-off goroutine keeps its own while its
// handler runs, and the new dispatching goroutine must not run inline
// without another.
func TestInlineConcurrencyBound(t *testing.T) {
	t.Parallel()
	for _, conc := range []int{1, 2} {
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			t.Parallel()
			r := newInlineRigLazy(t, 8, 600, 6, worker.OrderByKey, 0)
			r.slow = everyNth(60, 5, handoffSleep)
			r.holdFor = 20 * time.Millisecond
			cfg := r.config()
			cfg.Concurrency = conc
			r.armHold()
			w := start(t, cfg, r)
			// Fed in small waves, so that stretches start inline again and again.
			r.feedUntil(t, 30, 60*time.Second, "every record produced", func() bool { return r.produced() == int64(r.total) })
			r.waitAll(t)
			w.stop(t)
			r.check(t)
			r.sawInline(t)
			if peak := r.peak.Load(); peak > int64(conc) {
				t.Fatalf("%d handler calls ran at once; WORKER_CONCURRENCY is %d", peak, conc)
			}
		})
	}
}

// Partition ordering with inline runs and handoffs, stopped cleanly while
// a handler holds its dispatching goroutine: each partition runs one
// message at a time in offset order (the handler checks each offset is
// the one after the last), across the stops, with none lost or repeated.
// Attacks the handoff in partition mode: the messages it sends to the
// pool must still wait for the held one.
func TestInlinePartitionOrdering(t *testing.T) {
	t.Parallel()
	r := newInlineRig(t, 3, 2000, 10, worker.OrderByPartition)
	r.slow = everyNth(100, 3, handoffSleep)
	cfg := r.config()
	cfg.Concurrency = 4
	r.stopWhileHeld(t, cfg, 3)
	r.runToEnd(t, cfg)
}

// No ordering with inline runs and handoffs, stopped cleanly while a
// handler holds its dispatching goroutine: every record handled exactly
// once across the stops, the bound on concurrent calls kept. Attacks the
// done-set: in none mode the messages of a stretch finish in any order,
// inline and in the pool, and the stop's commit must record each.
func TestInlineNoOrdering(t *testing.T) {
	t.Parallel()
	r := newInlineRig(t, 3, 2000, 1, worker.OrderNone)
	r.slow = everyNth(80, 9, handoffSleep)
	cfg := r.config()
	cfg.Concurrency = 6
	r.stopWhileHeld(t, cfg, 3)
	r.runToEnd(t, cfg)
	if peak := r.peak.Load(); peak > int64(cfg.Concurrency) {
		t.Fatalf("%d handler calls ran at once; WORKER_CONCURRENCY is %d", peak, cfg.Concurrency)
	}
}

// Failures while inline: among fast records, special ones fail once (then
// succeed in place), panic through the local attempts (then succeed on the
// first retry tier), always fail (dead-lettered after every tier) or fail
// permanently (dead-lettered at once), some after blocking past the
// handoff threshold. Each is delivered exactly the attempts, on exactly
// the topics, the README's failure handling gives it without inline runs;
// each tier and the dead-letter topic hold exactly the records sent there,
// once; every other record is handled exactly once, each key in order; and
// every topic ends committed. Attacks: a failure (or the forwarding to a
// tier, a produce, so a handoff) on a dispatching goroutine, the in-place
// retry handed to the pool, and the key's next message after a handoff.
func TestInlineFailuresRoutedAsWithoutInline(t *testing.T) {
	t.Parallel()
	const parts, perPart, every, local = 2, 2000, 100, 2
	r := newInlineRigLazy(t, parts, perPart, 8, worker.OrderByKey, every)
	r.slow = everyNth(150, 17, handoffSleep)
	cfg := r.b.retryConfig(local, 50*time.Millisecond, 100*time.Millisecond)
	cfg.Concurrency = 8

	const (
		errOnce    = iota // fails its first attempt, then succeeds in place
		panicLocal        // panics through the local attempts, succeeds on tier 1
		always            // fails every attempt: dead-lettered
		permanent         // retry.Permanent: dead-lettered at once
	)
	kindOf := func(v string) int {
		var p, i int
		if _, err := fmt.Sscanf(v, "special-p%d-%d", &p, &i); err != nil {
			panic(fmt.Sprintf("special value %q: %v", v, err))
		}
		return (p*perPart/every + i/every) % 4
	}
	var got deliveries
	var succeeded, failedInline atomic.Int64
	r.special = func(ctx context.Context, m *handler.Message) error {
		got.add(ctx, m)
		if onInline() {
			failedInline.Add(1) // all but one kind fail on their first attempt
		}
		a := retry.Attempt(ctx)
		switch kindOf(string(m.Value)) {
		case errOnce:
			if a == 1 {
				time.Sleep(handoffSleep)
				return flakyError{"fails once"}
			}
		case panicLocal:
			if a <= local {
				if a == 1 {
					time.Sleep(handoffSleep)
				}
				panic("fails on the source topic")
			}
		case always:
			return flakyError{"always fails"}
		case permanent:
			return retry.Permanent(fmt.Errorf("cannot parse %q", m.Value))
		}
		succeeded.Add(1)
		return nil
	}

	specials := map[int][]string{}
	for p := range parts {
		for i := every / 2; i < perPart; i += every {
			v := fmt.Sprintf("special-p%d-%d", p, i)
			specials[kindOf(v)] = append(specials[kindOf(v)], v)
		}
	}
	dead := len(specials[always]) + len(specials[permanent])

	// Fed in small waves: a partition's first stretch after a cool-down
	// runs inline, so most waves start inline.
	w := start(t, cfg, r)
	r.feedUntil(t, 50, 60*time.Second, "every record produced", func() bool { return r.produced() == int64(r.total) })
	testutil.WaitFor(t, 60*time.Second, "every record handled, every special settled", func() bool {
		return r.handled.Load() >= int64(r.total) && succeeded.Load() >= int64(len(specials[errOnce])+len(specials[panicLocal]))
	})
	dlq := r.b.waitRecords(t, r.b.dlqTopic(), dead)
	r.b.waitAllCommitted(t, r.b.topic, r.b.tierTopic(1), r.b.tierTopic(2))
	w.stop(t)
	r.check(t)
	r.sawInline(t)
	t.Logf("special deliveries made inline: %d", failedInline.Load())
	if failedInline.Load() == 0 {
		t.Fatal("no special record was delivered inline: the test did not exercise failures in inline runs")
	}

	src, t1, t2 := r.b.topic, r.b.tierTopic(1), r.b.tierTopic(2)
	want := map[int][]string{
		errOnce:    {src, src},
		panicLocal: {src, src, t1},
		always:     {src, src, t1, t1, t2, t2},
		permanent:  {src},
	}
	for kind, vs := range specials {
		for _, v := range vs {
			ds := got.of(v)
			var topics []string
			for i, d := range ds {
				topics = append(topics, d.topic)
				if d.attempt != i+1 {
					t.Errorf("%s: delivery %d has attempt %d", v, i+1, d.attempt)
				}
			}
			if !slices.Equal(topics, want[kind]) {
				t.Errorf("%s (kind %d): delivered on %v, want %v", v, kind, topics, want[kind])
			}
		}
	}
	values := func(recs []kafkatest.ReadRecord) []string {
		var vs []string
		for _, rec := range recs {
			vs = append(vs, string(rec.Value))
		}
		slices.Sort(vs)
		return vs
	}
	sorted := func(vss ...[]string) []string {
		vs := slices.Concat(vss...)
		slices.Sort(vs)
		return vs
	}
	if got, want := values(dlq), sorted(specials[always], specials[permanent]); !slices.Equal(got, want) {
		t.Errorf("dead-letter topic holds %v, want %v", got, want)
	}
	for _, tier := range []struct {
		topic string
		want  []string
	}{{t1, sorted(specials[panicLocal], specials[always])}, {t2, sorted(specials[always])}} {
		recs, err := r.b.cluster.ReadAll(ctx(t), tier.topic)
		if err != nil {
			t.Fatal(err)
		}
		if got := values(recs); !slices.Equal(got, tier.want) {
			t.Errorf("%s holds %v, want %v", tier.topic, got, tier.want)
		}
	}
}
