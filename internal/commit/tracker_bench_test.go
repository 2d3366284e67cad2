package commit

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// trackerSink keeps the benchmarks' results alive.
var trackerSink int64

// BenchmarkOffsetTracker measures one partition's offset bookkeeping per
// message: a reserve, a finish and the committable offset read after it,
// as admit and complete do.
func BenchmarkOffsetTracker(b *testing.B) {
	// in-order: each message finishes window messages after it was
	// reserved, oldest first; every finish advances the committable offset.
	for _, window := range []int{1, 1000} {
		b.Run(fmt.Sprintf("in-order/window=%d", window), func(b *testing.B) {
			benchTrackerWindow(b, window, false)
		})
	}
	// stuck-head: offset 0 never finishes; everything behind it finishes in
	// order, so the done range above the committable offset grows by one
	// offset per message and nothing is ever dropped below.
	b.Run("stuck-head/window=1000", func(b *testing.B) { benchTrackerWindow(b, 1000, true) })
	// shuffled: batches of 256 finish in a random order (concurrent
	// handlers), so finishes behind an unfinished one add out-of-order
	// done ranges that later merge; with and without a stuck head.
	b.Run("shuffled/batch=256", func(b *testing.B) { benchTrackerShuffled(b, 256, false) })
	b.Run("stuck-head+shuffled/batch=256", func(b *testing.B) { benchTrackerShuffled(b, 256, true) })
}

func benchTrackerWindow(b *testing.B, window int, stuck bool) {
	o := newTracker[*testEntry](0)
	next := int64(0)
	if stuck {
		o.reserve(next, nil) // never finished
		next++
	}
	hs := make([]int32, window)
	var sink int64
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i >= window {
			o.finish(hs[i%window])
			sink += o.committable()
		}
		hs[i%window] = o.reserve(next, nil)
		next++
	}
	b.StopTimer()
	trackerSink = sink + int64(len(o.doneRanges()))
	if stuck && b.N > window {
		if c := o.committable(); c != 0 {
			b.Fatalf("committable %d, want 0 behind the stuck head", c)
		}
		if d := o.doneRanges(); len(d) != 1 || d[0] != (doneset.Range{Start: 1, End: next - int64(window)}) {
			b.Fatalf("done ranges %v, want [1, %d)", d, next-int64(window))
		}
	}
}

func benchTrackerShuffled(b *testing.B, batch int, stuck bool) {
	o := newTracker[*testEntry](0)
	next := int64(0)
	if stuck {
		o.reserve(next, nil)
		next++
	}
	perm := rand.New(rand.NewPCG(1, 2)).Perm(batch)
	hs := make([]int32, batch)
	var sink int64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(batch, b.N-done)
		for j := range k {
			hs[j] = o.reserve(next, nil)
			next++
		}
		for _, j := range perm {
			if j < k {
				o.finish(hs[j])
				sink += o.committable()
			}
		}
		done += k
	}
	b.StopTimer()
	trackerSink = sink
	want, held := next, 0
	if stuck {
		want, held = 0, 1
	}
	if c, h := o.committable(), o.heldCount(); c != want || h != held {
		b.Fatalf("committable %d with %d held, want %d with %d", c, h, want, held)
	}
}
