package commit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// The tracker against a naive model, in randomized runs (edge cases as
// tables: tracker_test.go).

// otModel is the naive reference for the tracker: every admitted offset
// with its state, and every offset that was never delivered (skipped over
// between two admitted ones).
type otModel struct {
	start      int64
	state      map[int64]otState // admitted offsets
	never      map[int64]bool    // offsets passed over between admitted ones
	last       int64             // last admitted offset, -1 before the first
	unfinished []int64           // the unfinished admitted offsets, ascending
	handle     map[int64]int32   // the tracker's handle of each unfinished offset
}

type otState int

const (
	otUnfinished otState = iota + 1
	otDone
)

func newOTModel(start int64) *otModel {
	return &otModel{start: start, state: map[int64]otState{}, never: map[int64]bool{}, last: -1, handle: map[int64]int32{}}
}

// next is the lowest offset that may be admitted next.
func (m *otModel) next() int64 {
	if m.last >= 0 {
		return m.last + 1
	}
	return max(m.start, 0)
}

func (m *otModel) admit(offset int64, s otState) {
	for o := m.next(); o < offset; o++ {
		m.never[o] = true
	}
	m.state[offset] = s
	m.last = offset
	if s == otUnfinished {
		m.unfinished = append(m.unfinished, offset)
	}
}

func (m *otModel) finish(i int) int64 {
	o := m.unfinished[i]
	m.unfinished = slices.Delete(m.unfinished, i, i+1)
	m.state[o] = otDone
	delete(m.handle, o)
	return o
}

// committable: the lowest unfinished admitted offset, or the one after the
// last admitted when none is unfinished; never below the start.
func (m *otModel) committable() int64 {
	c := m.start
	switch {
	case len(m.unfinished) > 0:
		c = m.unfinished[0]
	case m.last >= 0:
		c = m.last + 1
	}
	return max(c, m.start)
}

// isDone reports whether offset counts as done: admitted and done, or never
// delivered.
func (m *otModel) isDone(o int64) bool {
	return m.state[o] == otDone || m.never[o]
}

// otCheck compares the tracker with the model. full also walks every offset
// of [committable, last] against the model's map.
func otCheck(t *testing.T, o *tracker[*testEntry], m *otModel, peak int, full bool) {
	t.Helper()
	c := o.committable()
	if want := m.committable(); c != want {
		t.Fatalf("committable() = %d, model %d (unfinished %v, last %d)", c, want, otHead(m.unfinished), m.last)
	}
	if o.heldCount() != len(m.unfinished) {
		t.Fatalf("heldCount() = %d, model %d", o.heldCount(), len(m.unfinished))
	}
	if len(o.nodes) > peak {
		t.Fatalf("len(nodes) = %d exceeds the peak held count %d: handles not reused", len(o.nodes), peak)
	}
	if len(o.nodes) != o.heldCount()+len(o.free) {
		t.Fatalf("len(nodes) = %d, held %d + free %d", len(o.nodes), o.heldCount(), len(o.free))
	}
	// The tracker's unfinished list is the model's, in order.
	i := 0
	o.each(func(n node[*testEntry]) bool {
		if i >= len(m.unfinished) || n.offset != m.unfinished[i] {
			t.Fatalf("each(): unfinished #%d is %d, model %v", i, n.offset, otHead(m.unfinished[min(i, len(m.unfinished)):]))
		}
		i++
		return true
	})
	if i != len(m.unfinished) {
		t.Fatalf("each() listed %d unfinished, model %d", i, len(m.unfinished))
	}
	if n, ok := o.oldest(); ok != (len(m.unfinished) > 0) || ok && n.offset != m.unfinished[0] {
		t.Fatalf("oldest() = %d, %v; model %v", n.offset, ok, otHead(m.unfinished))
	}

	rs := o.doneRanges()
	if len(rs) > o.heldCount() {
		t.Fatalf("%d ranges with %d unfinished: more than held", len(rs), o.heldCount())
	}
	if o.rangeCount() != len(rs) {
		t.Fatalf("rangeCount() = %d, doneRanges() has %d: %v", o.rangeCount(), len(rs), otHead(rs))
	}
	for k, r := range rs {
		if r.Start >= r.End {
			t.Fatalf("range #%d %v is empty", k, r)
		}
		if r.Start < c {
			t.Fatalf("range #%d %v lies below committable %d", k, r, c)
		}
		if k > 0 && r.Start <= rs[k-1].End {
			t.Fatalf("ranges #%d %v and #%d %v overlap or touch", k-1, rs[k-1], k, r)
		}
	}
	if len(m.unfinished) == 0 {
		if len(rs) != 0 {
			t.Fatalf("nothing unfinished, yet done ranges %v", otHead(rs))
		}
		return
	}
	// The unfinished offsets and the ranges tile [committable, last+1).
	at, u := c, 0
	for _, r := range rs {
		for u < len(m.unfinished) && m.unfinished[u] < r.Start {
			if m.unfinished[u] != at {
				t.Fatalf("offset %d is neither unfinished nor in a done range (next unfinished %d, next range %v)", at, m.unfinished[u], r)
			}
			at++
			u++
		}
		if r.Start != at {
			t.Fatalf("offset %d is neither unfinished nor in a done range (next range %v)", at, r)
		}
		at = r.End
	}
	for ; u < len(m.unfinished); u++ {
		if m.unfinished[u] != at {
			t.Fatalf("offset %d: expected the unfinished %d, after ranges up to %d", at, m.unfinished[u], at)
		}
		at++
	}
	if at != m.last+1 {
		t.Fatalf("ranges and unfinished offsets end at %d, the last admitted is %d", at, m.last)
	}
	if !full {
		return
	}
	// The same, offset by offset against the model's map.
	k := 0
	for off := c; off <= m.last; off++ {
		for k < len(rs) && rs[k].End <= off {
			k++
		}
		in := k < len(rs) && rs[k].Start <= off
		switch {
		case m.state[off] == otUnfinished && in:
			t.Fatalf("unfinished offset %d lies in done range %v", off, rs[k])
		case m.isDone(off) && !in:
			t.Fatalf("offset %d is done (never delivered: %v) but in no range", off, m.never[off])
		case !m.isDone(off) && m.state[off] != otUnfinished:
			t.Fatalf("model: offset %d in [committable, last] is neither admitted nor passed over", off)
		}
	}
}

// otHead shortens a slice for a failure message.
func otHead[T any](s []T) []T {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func TestOffsetTrackerModel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		seed  uint64
		start int64
		ops   int
	}{
		{1, -1, 40000},
		{2, 0, 40000},
		{3, 17, 40000},
		{4, 1 << 40, 40000},
		{5, -1, 40000},
		{6, 3, 40000},
		{7, 0, 40000},
		{8, 1000, 40000},
	} {
		t.Run(fmt.Sprintf("seed=%d,start=%d", tc.seed, tc.start), func(t *testing.T) {
			t.Parallel()
			otRunModel(t, tc.seed, tc.start, tc.ops)
		})
	}
}

func otRunModel(t *testing.T, seed uint64, start int64, ops int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	o := newTracker[*testEntry](start)
	m := newOTModel(start)
	peak := 0
	// Offsets below a known start may come first: the partition skips
	// them (they lie before its floor), and they must not pull committable
	// below the start.
	if start > 0 {
		for off := max(0, start-2-rng.Int64N(5)); off < start; off += 1 + rng.Int64N(2) {
			o.skip(off)
			m.admit(off, otDone)
			otCheck(t, o, m, peak, true)
		}
	}
	// The mix drifts between phases that pile unfinished offsets up and
	// phases that drain them, so that both deep lists with many ranges and
	// the empty tracker are visited often. The cap keeps the model cheap.
	const maxHeld = 300
	pReserve := 0.5
	var reserves, skips, finishes, advances, empties, maxRanges int
	for step := range ops {
		if step%500 == 0 {
			pReserve = []float64{0.2, 0.5, 0.55, 0.7, 0.9}[rng.IntN(5)]
		}
		before := o.committable()
		next := max(m.next(), start) + int64(rng.IntN(4)) // 0–3 offsets never delivered
		if rng.IntN(4) == 0 {
			next = max(m.next(), start) // runs without gaps, too
		}
		var op string
		switch r := rng.Float64(); {
		case len(m.unfinished) > 0 && (r >= pReserve || len(m.unfinished) >= maxHeld):
			op = "finish"
			i := rng.IntN(len(m.unfinished))
			if rng.IntN(3) == 0 {
				i = 0 // the head more often than chance
			}
			h := m.handle[m.unfinished[i]]
			off := m.finish(i)
			advanced := o.finish(h)
			after := o.committable()
			if advanced != (after != before) {
				t.Fatalf("step %d: finish(%d) reported advanced=%v, committable %d -> %d", step, off, advanced, before, after)
			}
			if after < before {
				t.Fatalf("step %d: committable went back from %d to %d", step, before, after)
			}
			finishes++
			if advanced {
				advances++
			}
		case rng.IntN(4) == 0:
			op = "skip"
			o.skip(next)
			m.admit(next, otDone)
			skips++
		default:
			op = "reserve"
			h := o.reserve(next, nil)
			m.admit(next, otUnfinished)
			m.handle[next] = h
			peak = max(peak, o.heldCount())
			reserves++
		}
		if len(m.unfinished) == 0 {
			empties++
		}
		if c := o.committable(); c < before {
			t.Fatalf("step %d (%s): committable went back from %d to %d", step, op, before, c)
		}
		window := m.last - o.committable()
		maxRanges = max(maxRanges, len(o.doneRanges()))
		otCheck(t, o, m, peak, window <= 64 || step%128 == 0)
		if t.Failed() {
			t.Fatalf("step %d (%s)", step, op)
		}
	}
	t.Logf("%d reserves, %d skips, %d finishes (%d advanced), empty %d times, peak %d held, %d ranges",
		reserves, skips, finishes, advances, empties, peak, maxRanges)
	if reserves == 0 || skips == 0 || finishes == 0 || advances == 0 || empties == 0 {
		t.Fatalf("weak run: %d reserves, %d skips, %d finishes (%d advanced), %d times empty",
			reserves, skips, finishes, advances, empties)
	}
}

func newOTModelPair(start int64) (*tracker[*testEntry], *otModel) {
	return newTracker[*testEntry](start), newOTModel(start)
}

// otModelRanges is the done-set the model implies: every offset from the
// committable one to the last admitted that is not unfinished.
func otModelRanges(m *otModel) []doneset.Range {
	var out []doneset.Range
	if len(m.unfinished) == 0 {
		return nil
	}
	for off := m.committable(); off <= m.last; off++ {
		if m.state[off] == otUnfinished {
			continue
		}
		if n := len(out); n > 0 && out[n-1].End == off {
			out[n-1].End++
		} else {
			out = append(out, doneset.Range{Start: off, End: off + 1})
		}
	}
	return out
}

// otRawSize is the uvarint bytes of ranges encoded from base.
func otRawSize(base int64, ranges []doneset.Range) int {
	raw, prev := 0, base
	for _, r := range ranges {
		raw += doneset.UvarintLen(uint64(r.Start-prev)) + doneset.UvarintLen(uint64(r.End-r.Start))
		prev = r.End
	}
	return raw
}
