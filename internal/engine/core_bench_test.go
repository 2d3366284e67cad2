package engine

// Benchmarks of the worker's core without Kafka: a fake claim's Messages()
// channel → dispatcher → partition admit → pool goroutines → no-op handler
// → completion and committable offset. Built in real time (no synctest
// bubble), as Worker.run and ConsumeClaim build the pieces, minus the Kafka
// clients and the committer. Run them with
//
//	go test -run XXX -bench . -benchmem ./worker
//
// Everything a benchmark starts is stopped before it returns (goleak checks
// in TestMain).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// benchTimeout bounds every wait of a benchmark, so that a regression that
// loses a message fails it instead of hanging until go test's timeout.
const benchTimeout = time.Minute

// benchChunk is how many ring slots a feeder recycles at a time.
const benchChunk = 256

// benchMallocs reads the heap allocations made so far, stopping the world.
func benchMallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// benchReportMallocs reports the allocations since before per 1000 messages:
// allocs/op rounds down to a whole number, which hides one allocation per
// batch of messages.
func benchReportMallocs(b *testing.B, before uint64) {
	b.ReportMetric(float64(benchMallocs()-before)*1000/float64(b.N), "allocs/kmsg")
}

// benchCPU reads the process's CPU time so far (user and system, all
// threads): per message, it is less sensitive than ns/op to what else
// the machine runs.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSink keeps results the compiler could otherwise drop.
var benchSink int64

var benchNoop = handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })

// benchRig is a groupHandler with its pool and coarse clock, built as
// Worker.run builds them, without the Kafka clients and the committer, and
// outside any synctest bubble.
type benchRig struct {
	g        *Consumer
	pool     *Pool
	clock    *Clock
	stopping chan struct{}
	parts    []*benchPart
	abort    chan struct{} // stops the feeders early (a failed benchmark)
	feeders  sync.WaitGroup
	fed      chan struct{} // closed once every feeder returned; nil before they start
	stopOnce sync.Once
}

// benchPart is one claimed partition, its dispatcher and its feeder.
type benchPart struct {
	claim   *fakeClaim
	sess    *fakeSession
	end     context.CancelFunc // ends the session: its context is done
	p       *partition
	runDone chan struct{} // closed when the dispatcher's run returns
	n       int64         // messages to feed: offsets 0..n-1
	ring    []sarama.ConsumerMessage
	waits   int  // times the feeder waited to recycle a ring slot
	fresh   bool // feed fresh messages, made as sarama makes them (feedFresh)
}

// newBenchRig builds a worker with cfg adjusted by adjust, handing messages
// to h. With pooled, the pool runs cfg.Concurrency goroutines; without, it
// runs none and the benchmark takes the queued tasks itself. stop (also
// registered as a cleanup) ends everything.
func newBenchRig(b testing.TB, h handler.Handler, adjust func(*testConfig), pooled bool) *benchRig {
	b.Helper()
	cfg := defaultTestConfig()
	if adjust != nil {
		adjust(&cfg)
	}
	goroutines := 0
	if pooled {
		goroutines = cfg.Concurrency
	}
	r := &benchRig{pool: NewPool(goroutines), clock: &Clock{}, stopping: make(chan struct{}), abort: make(chan struct{})}
	p := testParams(b, h, cfg)
	p.ConsumerGroup, p.Pool, p.Clock, p.Stopping = &fakeGroup{}, r.pool, r.clock, r.stopping
	r.g = New(p)
	b.Cleanup(func() { r.stop(b) })
	return r
}

// claim builds partition id of topic "t" as ConsumeClaim does, with n
// messages to feed over keys distinct keys, without starting its dispatcher.
// The claim's channel is as deep as sarama's (ChannelBufferSize).
func (r *benchRig) claim(b testing.TB, id int32, n int64, keys int) *benchPart {
	b.Helper()
	ctx, end := context.WithCancel(context.Background())
	sess := &fakeSession{ctx: ctx}
	claim := &fakeClaim{topic: "t", partition: id, msgs: make(chan *sarama.ConsumerMessage, sarama.NewConfig().ChannelBufferSize)}
	claim.next.Store(n) // the high watermark: everything is produced already
	bp := &benchPart{claim: claim, sess: sess, end: end, n: n}
	bp.p = r.g.newPartition(sess, claim)
	if r.g.startClaim(sess, claim, bp.p) {
		b.Fatal("startClaim asked for a restart")
	}
	bp.ring = benchMessages(benchRingSize(cap(claim.msgs)), "t", id, keys)
	r.parts = append(r.parts, bp)
	return bp
}

// benchRingSize is how many messages a feeder recycles: enough that, while the
// dispatcher is not paused, a slot is always admitted before its reuse (the
// claim's channel plus one dispatcher batch plus a chunk, with room to
// spare), a power of two.
func benchRingSize(chanCap int) int {
	n := 1
	for n < 2*(chanCap+maxBatch+benchChunk) {
		n *= 2
	}
	return n
}

// benchMessages makes n messages of topic, partition id, each with one of
// keys keys picked at random (fixed seed), a shared 100-byte value and a
// timestamp; offsets are set when sent.
func benchMessages(n int, topic string, id int32, keys int) []sarama.ConsumerMessage {
	keyBytes := make([][]byte, keys)
	for i := range keyBytes {
		keyBytes[i] = fmt.Appendf(nil, "key-%06d", i)
	}
	value := make([]byte, 100)
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	now := time.Now()
	ms := make([]sarama.ConsumerMessage, n)
	for i := range ms {
		ms[i] = sarama.ConsumerMessage{
			Topic: topic, Partition: id, Key: keyBytes[rng.IntN(keys)], Value: value, Timestamp: now,
		}
	}
	return ms
}

// dispatch starts the claim's dispatcher, built as ConsumeClaim builds it.
func (r *benchRig) dispatch(bp *benchPart) {
	d := newDispatcher(r.g, bp.p, bp.claim)
	bp.runDone = make(chan struct{})
	go func() {
		defer close(bp.runDone)
		d.run(bp.sess.Context().Done())
	}()
}

// feed sends offsets 0..n-1 into the claim's channel, as sarama's partition
// consumer would, from the partition's ring of messages. A slot is
// rewritten only once the partition has admitted the message it held
// (nothing reads a message after admit copies it into its task); p.mu
// orders the dispatcher's reads before the feeder's rewrite. The send is a
// plain one, so that the feeder's own cost stays small: abort is checked
// once a chunk, and stop drains the channel to free a feeder blocked on it.
func (bp *benchPart) feed(abort <-chan struct{}) {
	if bp.fresh {
		bp.feedFresh(abort)
		return
	}
	ring := int64(len(bp.ring))
	for o := int64(0); o < bp.n; o++ {
		s := o & (ring - 1)
		if s%benchChunk == 0 {
			select {
			case <-abort:
				return
			default:
			}
			if o >= ring && !bp.awaitAdmitted(o-ring+benchChunk-1, abort) {
				return
			}
		}
		m := &bp.ring[s]
		m.Offset = o
		bp.claim.msgs <- m
	}
}

// awaitAdmitted waits until offset was admitted, or abort.
func (bp *benchPart) awaitAdmitted(offset int64, abort <-chan struct{}) bool {
	for waited := false; ; waited = true {
		if bp.p.state.Snapshot().LastAdmitted >= offset {
			if waited {
				bp.waits++
			}
			return true
		}
		select {
		case <-abort:
			return false
		case <-time.After(10 * time.Microsecond):
		}
	}
}

// marked is the partition's committable offset, from its commit state
// (which has its own lock).
func (bp *benchPart) marked() int64 {
	return bp.p.state.Snapshot().Marked
}

// startFeeders starts one feeder goroutine per partition; fed is closed once
// all have sent everything (or were aborted).
func (r *benchRig) startFeeders() (fed <-chan struct{}) {
	for _, bp := range r.parts {
		r.feeders.Go(func() { bp.feed(r.abort) })
	}
	r.fed = make(chan struct{})
	go func() { r.feeders.Wait(); close(r.fed) }()
	return r.fed
}

// awaitMarked waits until every partition's committable offset reached the
// end of what it was fed, which means every message was handled.
func (r *benchRig) awaitMarked(b testing.TB, fed <-chan struct{}) {
	b.Helper()
	timeout := time.NewTimer(benchTimeout)
	defer timeout.Stop()
	select {
	case <-fed:
	case <-timeout.C:
		b.Fatalf("feeding did not finish within %v: %s", benchTimeout, r.state())
	}
	deadline := time.Now().Add(benchTimeout)
	for _, bp := range r.parts {
		for bp.marked() < bp.n {
			if time.Now().After(deadline) {
				b.Fatalf("committable offsets did not reach the end within %v: %s", benchTimeout, r.state())
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
}

func (r *benchRig) state() string {
	s := ""
	for _, bp := range r.parts {
		snap := bp.p.state.Snapshot()
		s += fmt.Sprintf("[partition %d: fed %d, last admitted %d, held %d, marked %d] ",
			bp.p.id, bp.n, snap.LastAdmitted, snap.Held, snap.Marked)
	}
	return s
}

// handledOK is how many messages the handler finished successfully, from
// the partitions' own stats.
func (r *benchRig) handledOK() uint64 {
	var n uint64
	for _, bp := range r.parts {
		n += bp.p.stats.Processed(metricdef.Success)
	}
	return n
}

// stop ends everything the rig started, in the order release and
// Worker.run do: the feeders, each claim (session ended, Messages()
// closed) and its dispatcher, the partitions' drain, the coarse clock, the
// pool. It may be called more than once.
func (r *benchRig) stop(b testing.TB) {
	r.stopOnce.Do(func() {
		close(r.abort)
		close(r.stopping)
		for _, bp := range r.parts {
			bp.end()
			if bp.runDone != nil {
				select {
				case <-bp.runDone:
				case <-time.After(benchTimeout):
					b.Errorf("partition %d: the dispatcher did not return", bp.p.id)
				}
			}
		}
		r.drainFeeders(b) // before closing the channels they send to
		for _, bp := range r.parts {
			close(bp.claim.msgs)
			if n := bp.p.drain(time.Second); n != 0 {
				b.Errorf("partition %d: %d handlers still running at shutdown", bp.p.id, n)
			}
			r.g.Metrics.Retire(bp.p.stats)
		}
		r.clock.Stop()
		if !r.pool.Stop(5 * time.Second) {
			b.Error("pool goroutines still running at shutdown")
		}
	})
}

// drainFeeders waits for the feeders to return, emptying the claims'
// channels meanwhile so that a feeder blocked in a send sees abort.
func (r *benchRig) drainFeeders(b testing.TB) {
	if r.fed == nil {
		return
	}
	deadline := time.Now().Add(benchTimeout)
	for {
		for _, bp := range r.parts {
			for len(bp.claim.msgs) > 0 {
				<-bp.claim.msgs // only stop receives now: the dispatchers returned
			}
		}
		select {
		case <-r.fed:
			return
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Error("feeders did not return")
			return
		}
	}
}

type benchCoreCase struct {
	name       string
	keys       int
	partitions int
	ordering   Ordering
	batch      *Batch // a batch handler's lots; nil: the no-op Handler
}

// BenchmarkCoreNoop feeds b.N messages, spread over the partitions, each
// partition's claim from its own goroutine, through the dispatcher, admit,
// the pool and a no-op handler, until every partition's committable offset
// reached its end. ns/op and allocs/op are per message. Default config:
// 64 handler goroutines, 1000 messages in flight per partition.
func BenchmarkCoreNoop(b *testing.B) {
	for _, c := range []benchCoreCase{
		{name: "keys=1000/partitions=8", keys: 1000, partitions: 8, ordering: OrderByKey},
		{name: "keys=1/partitions=1", keys: 1, partitions: 1, ordering: OrderByKey},
		{name: "ordering=none/partitions=8", keys: 1000, partitions: 8, ordering: OrderNone},
		{name: "keys=40/partitions=256", keys: 40, partitions: 256, ordering: OrderByKey}, // 10,000 keys spread over 256 partitions
	} {
		b.Run(c.name, func(b *testing.B) { benchCore(b, c) })
	}
}

// BenchmarkCoreBatch is BenchmarkCoreNoop with a no-op batch handler:
// lots of up to 100 messages, cut at once (wait 0) or after 1ms.
func BenchmarkCoreBatch(b *testing.B) {
	for _, c := range []benchCoreCase{
		{name: "keys=1000/partitions=8/wait=0", keys: 1000, partitions: 8, ordering: OrderByKey, batch: &Batch{Max: 100}},
		{name: "keys=1000/partitions=8/wait=1ms", keys: 1000, partitions: 8, ordering: OrderByKey, batch: &Batch{Max: 100, Wait: time.Millisecond}},
		{name: "keys=1/partitions=1/wait=0", keys: 1, partitions: 1, ordering: OrderByKey, batch: &Batch{Max: 100}},
	} {
		c.batch.Handler = handler.BatchHandlerFunc(func(context.Context, []*handler.Message) error { return nil })
		b.Run(c.name, func(b *testing.B) { benchCore(b, c) })
	}
}

func benchCore(b *testing.B, c benchCoreCase) {
	r := newBenchRig(b, benchNoop, func(cfg *testConfig) { cfg.Ordering = c.ordering }, true)
	r.g.Batch = c.batch
	for i := range c.partitions {
		n := int64(b.N / c.partitions)
		if i < b.N%c.partitions {
			n++
		}
		r.dispatch(r.claim(b, int32(i), n, c.keys))
	}
	b.ReportAllocs()
	mallocs := benchMallocs()
	b.ResetTimer()
	cpu := benchCPU()
	fed := r.startFeeders()
	r.awaitMarked(b, fed)
	b.StopTimer()
	b.ReportMetric(float64(benchCPU()-cpu)/float64(b.N), "cpu-ns/msg")
	benchReportMallocs(b, mallocs)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if n := r.handledOK(); n != uint64(b.N) {
		b.Fatalf("handled %d messages, want %d", n, b.N)
	}
	waits := 0
	for _, bp := range r.parts {
		waits += bp.waits
	}
	if waits > 0 {
		b.Logf("feeders waited %d times to recycle a message (the dispatcher ran behind)", waits)
	}
	r.stop(b)
}

// BenchmarkAdmit measures partition.admit of 256-message batches over 1000
// keys, each batch completed before the next: "complete" completes each
// task under the partition's lock as run does after a successful delivery;
// "run" calls partition.run itself (no-op handler, metrics, the key's next
// message run inline). No pool goroutine runs: the benchmark takes the
// queued tasks from the pool's queue. Per message.
func BenchmarkAdmit(b *testing.B) {
	for _, mode := range []string{"complete", "run"} {
		b.Run("keys=1000/batch=256/"+mode, func(b *testing.B) { benchAdmit(b, 1000, maxBatch, mode == "run") })
	}
}

func benchAdmit(b *testing.B, keys, batch int, run bool) {
	r := newBenchRig(b, benchNoop, nil, false)
	bp := r.claim(b, 0, 0, keys)
	p := bp.p
	ms := make([]*sarama.ConsumerMessage, 4*batch) // 4 batches of messages, reused in turn
	for i := range ms {
		ms[i] = &bp.ring[i]
	}
	var queued []*task
	var slot runSlot
	next := int64(0)
	b.ReportAllocs()
	mallocs := benchMallocs()
	b.ResetTimer()
	for round, done := 0, 0; done < b.N; round++ {
		k := min(batch, b.N-done)
		in := ms[(round%4)*batch:][:k]
		for _, m := range in {
			m.Offset = next
			next++
		}
		if n, full := p.admit(in); n != k || full {
			b.Fatalf("admitted %d of %d (full %v)", n, k, full)
		}
		queued = benchTakeQueued(r.pool, queued[:0])
		for _, t := range queued {
			for t != nil {
				if run {
					t = p.run(t, &slot)
				} else {
					p.mu.Lock()
					var idle bool
					t, idle = p.complete(t)
					p.settle(false, idle)
					p.mu.Unlock()
				}
			}
		}
		clear(queued)
		done += k
	}
	b.StopTimer()
	benchReportMallocs(b, mallocs)
	if m := bp.marked(); m != next {
		b.Fatalf("marked %d, want %d", m, next)
	}
	r.stop(b)
}

// benchTakeQueued moves every task queued in a pool without goroutines into
// buf, as the pool's goroutines would pop them.
func benchTakeQueued(p *Pool, buf []*task) []*task {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf = append(buf, p.items[p.head:]...)
	clear(p.items)
	p.items, p.head = p.items[:0], 0
	p.waiting.Store(0)
	return buf
}
