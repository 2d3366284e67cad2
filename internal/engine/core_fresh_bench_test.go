package engine

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// freshBlock is how many messages a fresh feeder decodes at once, as sarama
// decodes a fetch response's records for a partition in one go (a 1 MiB
// fetch of 100-byte records holds several thousand).
const freshBlock = 2048

// BenchmarkCoreFresh is BenchmarkCoreNoop with messages made as sarama
// makes them: every message a fresh allocation, decoded in blocks whose
// keys and values share one buffer, the block held until its last message
// is sent. So the garbage collector runs at about a real consumer's pace,
// with a real consumer's pointerful heap to mark, and the engine's pointer
// writes pay the write barrier while it marks, which the ring of reused
// messages in BenchmarkCoreNoop (no allocation, no GC) never shows.
//
// side=raw is the same feeders drained by one loop per partition that calls
// a no-op handler and marks the offset under a lock, as raw sarama's
// ConsumeClaim and MarkMessage do: worker/raw of cpu-ns/msg is the
// engine's cost per message over the least a consumer does.
func BenchmarkCoreFresh(b *testing.B) {
	for _, c := range []benchCoreCase{
		{name: "partitions=8", keys: 1000, partitions: 8, ordering: OrderByKey},
		{name: "partitions=256", keys: 40, partitions: 256, ordering: OrderByKey},
	} {
		b.Run("side=raw/"+c.name, func(b *testing.B) { benchFreshRaw(b, c) })
		b.Run("side=worker/"+c.name, func(b *testing.B) { benchFreshWorker(b, c) })
	}
}

func benchFreshWorker(b *testing.B, c benchCoreCase) {
	r := newBenchRig(b, benchNoop, func(cfg *testConfig) { cfg.Ordering = c.ordering }, true)
	for i := range c.partitions {
		bp := r.claim(b, int32(i), benchShare(b.N, c.partitions, i), c.keys)
		bp.fresh = true
		r.dispatch(bp)
	}
	benchMeasure(b, func() {
		r.awaitMarked(b, r.startFeeders())
	})
	if n := r.handledOK(); n != uint64(b.N) {
		b.Fatalf("handled %d messages, want %d", n, b.N)
	}
	r.stop(b)
}

// rawLoop is raw sarama's side of a partition: its claim's channel drained
// by one goroutine.
type rawLoop struct {
	bp     *benchPart
	mu     sync.Mutex // as sarama's partitionOffsetManager's
	marked int64
	done   chan struct{}
}

func (l *rawLoop) run(handle func(*sarama.ConsumerMessage) error) {
	defer close(l.done)
	for m := range l.bp.claim.msgs {
		if handle(m) == nil {
			l.mu.Lock()
			if m.Offset+1 > l.marked {
				l.marked = m.Offset + 1
			}
			l.mu.Unlock()
		}
	}
}

func (l *rawLoop) markedOffset() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.marked
}

func benchFreshRaw(b *testing.B, c benchCoreCase) {
	handle := func(*sarama.ConsumerMessage) error { return nil }
	loops := make([]*rawLoop, c.partitions)
	var feeders sync.WaitGroup
	abort := make(chan struct{})
	for i := range loops {
		claim := &fakeClaim{topic: "t", partition: int32(i), msgs: make(chan *sarama.ConsumerMessage, sarama.NewConfig().ChannelBufferSize)}
		bp := &benchPart{claim: claim, n: benchShare(b.N, c.partitions, i), fresh: true}
		bp.ring = benchMessages(benchRingSize(cap(claim.msgs)), "t", int32(i), c.keys)
		loops[i] = &rawLoop{bp: bp, done: make(chan struct{})}
		go loops[i].run(handle)
	}
	defer func() {
		close(abort)
		feeders.Wait()
		for _, l := range loops {
			close(l.bp.claim.msgs)
			<-l.done
		}
	}()
	benchMeasure(b, func() {
		for _, l := range loops {
			feeders.Go(func() { l.bp.feed(abort) })
		}
		deadline := time.Now().Add(benchTimeout)
		for _, l := range loops {
			for l.markedOffset() < l.bp.n {
				if time.Now().After(deadline) {
					b.Fatalf("partition %d: marked %d of %d within %v", l.bp.claim.partition, l.markedOffset(), l.bp.n, benchTimeout)
				}
				time.Sleep(20 * time.Microsecond)
			}
		}
	})
}

// benchShare is partition i's share of n messages over parts partitions.
func benchShare(n, parts, i int) int64 {
	s := int64(n / parts)
	if i < n%parts {
		s++
	}
	return s
}

// benchMeasure times run and reports its CPU, allocations, GC cycles and
// rate per message.
func benchMeasure(b *testing.B, run func()) {
	b.ReportAllocs()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	mallocs, gcs := ms.Mallocs, ms.NumGC
	b.ResetTimer()
	cpu := benchCPU()
	run()
	b.StopTimer()
	b.ReportMetric(float64(benchCPU()-cpu)/float64(b.N), "cpu-ns/msg")
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.Mallocs-mallocs)*1000/float64(b.N), "allocs/kmsg")
	b.ReportMetric(float64(ms.NumGC-gcs), "gcs")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// feedFresh sends offsets 0..n-1 into the claim's channel as sarama's
// partition consumer does: decoded a block at a time into fresh messages
// (copies of the ring's first message, with its key), the block kept until
// its last message is sent.
func (bp *benchPart) feedFresh(abort <-chan struct{}) {
	for o := int64(0); o < bp.n; {
		select {
		case <-abort:
			return
		default:
		}
		block := decodeFresh(bp.ring, o, int(min(freshBlock, bp.n-o)))
		for _, m := range block {
			bp.claim.msgs <- m
		}
		o += int64(len(block))
	}
}

// decodeFresh makes n messages from offset first on, each like the ring's
// message for its offset, their keys and values cut from one buffer.
func decodeFresh(ring []sarama.ConsumerMessage, first int64, n int) []*sarama.ConsumerMessage {
	kl, vl := len(ring[0].Key), len(ring[0].Value) // all the same length
	buf := make([]byte, n*(kl+vl))
	block := make([]*sarama.ConsumerMessage, n)
	for i := range block {
		tmpl := &ring[(first+int64(i))%int64(len(ring))]
		at := i * (kl + vl)
		key, value := buf[at:at+kl:at+kl], buf[at+kl:at+kl+vl:at+kl+vl]
		copy(key, tmpl.Key)
		copy(value, tmpl.Value)
		block[i] = &sarama.ConsumerMessage{
			Topic: tmpl.Topic, Partition: tmpl.Partition, Offset: first + int64(i),
			Key: key, Value: value, Timestamp: tmpl.Timestamp, BlockTimestamp: tmpl.Timestamp,
		}
	}
	return block
}
