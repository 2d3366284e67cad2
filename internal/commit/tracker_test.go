package commit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// Edge cases of the tracker as scripted tables (the randomized comparison
// with a naive model: tracker_model_test.go).

// otStep is one step of an edge-case script.
type otStep struct {
	op     string // "reserve", "skip" or "finish"
	offset int64
	// Expected after the step.
	committable int64
	ranges      []doneset.Range
	held        int
	advanced    bool // finish only
}

func otRunScript(t *testing.T, start int64, steps []otStep) {
	t.Helper()
	o := newTracker[*testEntry](start)
	handles := map[int64]int32{}
	for i, s := range steps {
		switch s.op {
		case "reserve":
			handles[s.offset] = o.reserve(s.offset, nil)
		case "skip":
			o.skip(s.offset)
		case "finish":
			h, ok := handles[s.offset]
			if !ok {
				t.Fatalf("step %d: finish %d: not reserved", i, s.offset)
			}
			delete(handles, s.offset)
			if adv := o.finish(h); adv != s.advanced {
				t.Errorf("step %d: finish %d: advanced = %v, want %v", i, s.offset, adv, s.advanced)
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		if c := o.committable(); c != s.committable {
			t.Errorf("step %d (%s %d): committable = %d, want %d", i, s.op, s.offset, c, s.committable)
		}
		if rs := o.doneRanges(); !slices.Equal(rs, s.ranges) {
			t.Errorf("step %d (%s %d): ranges = %v, want %v", i, s.op, s.offset, rs, s.ranges)
		}
		if o.heldCount() != s.held {
			t.Errorf("step %d (%s %d): held = %d, want %d", i, s.op, s.offset, o.heldCount(), s.held)
		}
		if t.Failed() {
			return
		}
	}
}

type otRanges = []doneset.Range

func TestOffsetTrackerEdgeCases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start int64
		steps []otStep
	}{
		{"unknown start, nothing admitted", -1, nil},
		{"unknown start, first reserve", -1, []otStep{
			{"reserve", 5, 5, nil, 1, false},
			{"finish", 5, 6, nil, 0, true},
		}},
		{"unknown start, first skip", -1, []otStep{
			{"skip", 5, 6, nil, 0, false},
			{"skip", 9, 10, nil, 0, false}, // a gap with nothing unfinished
			{"reserve", 12, 12, nil, 1, false},
		}},
		{"known start, reserve at start", 10, []otStep{
			{"reserve", 10, 10, nil, 1, false},
			{"reserve", 11, 10, nil, 2, false},
			{"finish", 10, 11, nil, 1, true},
			{"finish", 11, 12, nil, 0, true},
		}},
		{"skips below the start", 10, []otStep{
			{"skip", 7, 10, nil, 0, false},
			{"skip", 9, 10, nil, 0, false},
			{"reserve", 11, 11, nil, 1, false},
			{"finish", 11, 12, nil, 0, true},
		}},
		{"known start 0, gap before the first", 0, []otStep{
			{"reserve", 3, 3, nil, 1, false},
			{"reserve", 5, 3, otRanges{{Start: 4, End: 5}}, 2, false},
			{"finish", 3, 5, nil, 1, true},
			{"finish", 5, 6, nil, 0, true},
		}},
		{"known start, gap before the first skip", 10, []otStep{
			{"skip", 14, 15, nil, 0, false},
			{"reserve", 15, 15, nil, 1, false},
		}},
		{"skip with nothing unfinished", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"finish", 0, 1, nil, 0, true},
			{"skip", 1, 2, nil, 0, false},
			{"skip", 4, 5, nil, 0, false},
			{"reserve", 7, 7, nil, 1, false},
			{"skip", 8, 7, otRanges{{Start: 8, End: 9}}, 1, false},
			{"skip", 10, 7, otRanges{{Start: 8, End: 11}}, 1, false}, // the gap 9 joins
		}},
		{"skips and gaps behind an unfinished one", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"skip", 1, 0, otRanges{{Start: 1, End: 2}}, 1, false},
			{"skip", 2, 0, otRanges{{Start: 1, End: 3}}, 1, false},
			{"reserve", 3, 0, otRanges{{Start: 1, End: 3}}, 2, false},
			{"skip", 5, 0, otRanges{{Start: 1, End: 3}, {Start: 4, End: 6}}, 2, false},
			{"reserve", 9, 0, otRanges{{Start: 1, End: 3}, {Start: 4, End: 9}}, 3, false},
			{"finish", 3, 0, otRanges{{Start: 1, End: 9}}, 2, false},
			{"finish", 0, 9, nil, 1, true},
		}},
		{"finish the head with ranges behind", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"reserve", 1, 0, nil, 2, false},
			{"reserve", 2, 0, nil, 3, false},
			{"reserve", 3, 0, nil, 4, false},
			{"reserve", 4, 0, nil, 5, false},
			{"finish", 1, 0, otRanges{{Start: 1, End: 2}}, 4, false},
			{"finish", 3, 0, otRanges{{Start: 1, End: 2}, {Start: 3, End: 4}}, 3, false},
			{"finish", 0, 2, otRanges{{Start: 3, End: 4}}, 2, true}, // the range behind the head goes
			{"finish", 2, 4, nil, 1, true},                          // and the one behind the new head
			{"finish", 4, 5, nil, 0, true},
		}},
		{"finish the head with a range up to the last admitted", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"skip", 1, 0, otRanges{{Start: 1, End: 2}}, 1, false},
			{"skip", 3, 0, otRanges{{Start: 1, End: 4}}, 1, false},
			{"finish", 0, 4, nil, 0, true},
		}},
		{"finish the tail", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"reserve", 1, 0, nil, 2, false},
			{"reserve", 2, 0, nil, 3, false},
			{"finish", 2, 0, otRanges{{Start: 2, End: 3}}, 2, false},
			{"reserve", 3, 0, otRanges{{Start: 2, End: 3}}, 3, false},
			{"finish", 3, 0, otRanges{{Start: 2, End: 4}}, 2, false},
			{"reserve", 6, 0, otRanges{{Start: 2, End: 6}}, 3, false}, // 4 and 5 never delivered: done
			{"finish", 6, 0, otRanges{{Start: 2, End: 7}}, 2, false},
			{"reserve", 8, 0, otRanges{{Start: 2, End: 8}}, 3, false},
			{"skip", 9, 0, otRanges{{Start: 2, End: 8}, {Start: 9, End: 10}}, 3, false},
			{"finish", 1, 0, otRanges{{Start: 1, End: 8}, {Start: 9, End: 10}}, 2, false},
			{"finish", 0, 8, otRanges{{Start: 9, End: 10}}, 1, true},
			{"finish", 8, 10, nil, 0, true}, // the tail, also the head
		}},
		{"finish the tail and the head when they are one", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"reserve", 1, 0, nil, 2, false},
			{"finish", 1, 0, otRanges{{Start: 1, End: 2}}, 1, false},
			{"reserve", 7, 0, otRanges{{Start: 1, End: 7}}, 2, false},
			{"finish", 0, 7, nil, 1, true},
			{"finish", 7, 8, nil, 0, true}, // the tail, also the head
		}},
		{"finish the tail across a gap", 5, []otStep{
			{"reserve", 5, 5, nil, 1, false},
			{"reserve", 8, 5, otRanges{{Start: 6, End: 8}}, 2, false},
			{"finish", 8, 5, otRanges{{Start: 6, End: 9}}, 1, false},
			{"finish", 5, 9, nil, 0, true},
		}},
		{"handles reused", 0, []otStep{
			{"reserve", 0, 0, nil, 1, false},
			{"finish", 0, 1, nil, 0, true},
			{"reserve", 1, 1, nil, 1, false},
			{"reserve", 2, 1, nil, 2, false},
			{"finish", 2, 1, otRanges{{Start: 2, End: 3}}, 1, false},
			{"reserve", 3, 1, otRanges{{Start: 2, End: 3}}, 2, false},
			{"finish", 1, 3, nil, 1, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if len(tc.steps) == 0 {
				o := newTracker[*testEntry](tc.start)
				if o.committable() != tc.start || o.heldCount() != 0 || len(o.doneRanges()) != 0 {
					t.Fatalf("empty tracker: committable %d, held %d, ranges %v", o.committable(), o.heldCount(), o.doneRanges())
				}
				if _, ok := o.oldest(); ok {
					t.Fatal("empty tracker has an oldest node")
				}
				return
			}
			otRunScript(t, tc.start, tc.steps)
		})
	}
}

// A freshly made tracker reports its start; admitting moves it.
func TestOffsetTrackerStart(t *testing.T) {
	t.Parallel()
	for _, start := range []int64{-2, -1, 0, 1, 1 << 40} {
		o := newTracker[*testEntry](start)
		if got := o.committable(); got != start {
			t.Errorf("newTracker[*testEntry](%d).committable() = %d", start, got)
		}
	}
	// The handles stay small: len(nodes) is the peak held count.
	o := newTracker[*testEntry](0)
	for i := range int64(1000) {
		h := o.reserve(i, nil)
		if !o.finish(h) {
			t.Fatalf("finishing the only unfinished offset %d did not advance", i)
		}
	}
	if len(o.nodes) != 1 {
		t.Fatalf("1000 reserve/finish pairs left %d nodes, want 1", len(o.nodes))
	}
}

// Every order of finishing 4 offsets, with and without offsets never
// delivered between them, against a recomputation from scratch.
func TestOffsetTrackerFinishPermutations(t *testing.T) {
	t.Parallel()
	perms := otPermutations([]int{0, 1, 2, 3})
	if len(perms) != 24 {
		t.Fatalf("%d permutations", len(perms))
	}
	for _, layout := range []struct {
		name    string
		start   int64
		offsets []int64
	}{
		{"contiguous", 0, []int64{0, 1, 2, 3}},
		{"contiguous, unknown start", -1, []int64{0, 1, 2, 3}},
		{"gaps", 10, []int64{10, 12, 13, 17}},
		{"gap before the first", 3, []int64{5, 6, 8, 9}},
	} {
		for _, perm := range perms {
			t.Run(fmt.Sprintf("%s/%v", layout.name, perm), func(t *testing.T) {
				o := newTracker[*testEntry](layout.start)
				handles := make([]int32, len(layout.offsets))
				for i, off := range layout.offsets {
					handles[i] = o.reserve(off, nil)
				}
				last := layout.offsets[len(layout.offsets)-1]
				done := map[int]bool{}
				for _, i := range perm {
					before := o.committable()
					adv := o.finish(handles[i])
					done[i] = true
					// From scratch: the lowest unfinished offset, and every
					// offset above it up to last that is not unfinished.
					var unfinished []int64
					for j, off := range layout.offsets {
						if !done[j] {
							unfinished = append(unfinished, off)
						}
					}
					wantC := last + 1
					if len(unfinished) > 0 {
						wantC = unfinished[0]
					}
					var want []doneset.Range
					for off := wantC; off <= last; off++ {
						if slices.Contains(unfinished, off) {
							continue
						}
						if n := len(want); n > 0 && want[n-1].End == off {
							want[n-1].End++
						} else {
							want = append(want, doneset.Range{Start: off, End: off + 1})
						}
					}
					c := o.committable()
					if c != wantC {
						t.Fatalf("after finishing %d: committable %d, want %d", layout.offsets[i], c, wantC)
					}
					if adv != (c != before) {
						t.Fatalf("after finishing %d: advanced %v, committable %d -> %d", layout.offsets[i], adv, before, c)
					}
					if !slices.Equal(o.doneRanges(), want) || o.rangeCount() != len(want) {
						t.Fatalf("after finishing %d: ranges %v (count %d), want %v", layout.offsets[i], o.doneRanges(), o.rangeCount(), want)
					}
					if o.heldCount() != len(unfinished) {
						t.Fatalf("after finishing %d: held %d, want %d", layout.offsets[i], o.heldCount(), len(unfinished))
					}
				}
				if len(o.nodes) != len(layout.offsets) || len(o.free) != len(layout.offsets) {
					t.Fatalf("nodes %d, free %d after finishing all", len(o.nodes), len(o.free))
				}
			})
		}
	}
}

func otPermutations(xs []int) [][]int {
	if len(xs) <= 1 {
		return [][]int{slices.Clone(xs)}
	}
	var out [][]int
	for i := range xs {
		rest := slices.Concat(xs[:i:i], xs[i+1:])
		for _, p := range otPermutations(rest) {
			out = append(out, append([]int{xs[i]}, p...))
		}
	}
	return out
}

// doneSizeBound never underestimates: with walks only every so often, the
// bound after any mix of reserves (with gaps), skips and finishes is at
// least the exact uvarint size of the done-set, taken from the model.
func TestOffsetTrackerDoneSizeBound(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		o, m := newOTModelPair(0)
		walkEvery := []int{1, 7, 50, 400}[seed%4]
		for step := range 20000 {
			switch r := rng.Float64(); {
			case len(m.unfinished) > 0 && (r < 0.45 || len(m.unfinished) >= 300):
				i := rng.IntN(len(m.unfinished))
				h := m.handle[m.unfinished[i]]
				m.finish(i)
				o.finish(h)
			case r < 0.55:
				next := m.next() + int64(rng.IntN(3))
				o.skip(next)
				m.admit(next, otDone)
			default:
				next := m.next() + int64(rng.IntN(3))
				h := o.reserve(next, nil)
				m.admit(next, otUnfinished)
				m.handle[next] = h
			}
			base := m.committable()
			widest := doneset.UvarintLen(uint64(max(m.last-base, 0)))
			exact := otRawSize(base, otModelRanges(m))
			if bound := o.doneSizeBound(widest); bound < exact {
				t.Fatalf("seed %d step %d: bound %d < exact %d (%d changes since the last walk)", seed, step, bound, exact, o.changes)
			}
			if step%walkEvery == 0 {
				o.doneRanges()
				if o.walkedRaw != exact {
					t.Fatalf("seed %d step %d: walked size %d, exact %d", seed, step, o.walkedRaw, exact)
				}
			}
		}
	}
}
