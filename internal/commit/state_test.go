package commit

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// AdmitDone takes offsets that were handled before they were admitted: with
// nothing unfinished the committable offset moves past the last of them;
// with an unfinished one before them they are done above it (one range,
// gaps included); offsets at or below the last admitted change nothing.
// They are not counted as skipped (the previous owner's).
func TestAdmitDone(t *testing.T) {
	s := NewState[*testEntry](StateParams{Topic: "t", Initial: 10, MaxHeld: 100, Log: slog.New(slog.DiscardHandler)})
	s.AdmitDone(14) // 10-14 handled
	if snap := s.Snapshot(); snap.Marked != 15 || snap.Held != 0 || snap.LastAdmitted != 14 || snap.Skipped != 0 {
		t.Fatalf("after AdmitDone(14): %+v, want marked 15, nothing held, last admitted 14, none skipped", snap)
	}
	s.AdmitDone(12) // nothing new
	if snap := s.Snapshot(); snap.Marked != 15 || snap.LastAdmitted != 14 {
		t.Fatalf("after AdmitDone(12): %+v, want it unchanged", snap)
	}

	e := &testEntry{offset: 15}
	s.Capacity(1, 15)
	hs, _ := s.Admit([]int64{15}, []*testEntry{e}, false, 15)
	s.AdmitDone(20) // 16-20 handled while 15 is not
	if snap := s.Snapshot(); snap.Marked != 15 || snap.Held != 1 || snap.Ranges != 1 {
		t.Fatalf("15 unfinished, 16-20 done: %+v, want marked 15, 1 held, 1 range", snap)
	}
	if base, ranges := s.DoneRanges(); base != 15 || !slices.Equal(ranges, []doneset.Range{{Start: 16, End: 21}}) {
		t.Fatalf("done ranges above %d: %v, want 16-20 above 15", base, ranges)
	}
	s.Finish(hs[0])
	if snap := s.Snapshot(); snap.Marked != 21 || snap.Held != 0 || snap.Ranges != 0 {
		t.Fatalf("15 done: %+v, want marked 21, nothing held, no range", snap)
	}
}
