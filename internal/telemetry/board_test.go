package telemetry

import (
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// The ring keeps the last 20 failures, newest first.
func TestFailureRingKeepsLast20(t *testing.T) {
	t.Parallel()
	b := newBoard()
	for i := range 25 {
		b.AddFailure(Failure{Offset: int64(i)})
	}
	got := b.RecentFailures()
	if len(got) != maxFailures {
		t.Fatalf("%d failures kept, want %d", len(got), maxFailures)
	}
	for i, f := range got {
		if f.Offset != int64(24-i) {
			t.Fatalf("failure %d has offset %d, want %d", i, f.Offset, 24-i)
		}
	}
}

// Rates are differences of the cumulative totals over their interval; at
// most one point a second is kept, over the last five minutes.
func TestRateSeries(t *testing.T) {
	t.Parallel()
	b := newBoard()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	calls := 0
	at := func(d time.Duration, ok, fail uint64) {
		b.NoteRate(t0.Add(d), func() (c [metricdef.NumResults]uint64) {
			calls++
			c[metricdef.Success], c[metricdef.Error] = ok, fail
			return c
		})
	}
	at(0, 0, 0)
	at(500*time.Millisecond, 1, 1) // within the second: skipped
	at(2*time.Second, 100, 10)
	at(3*time.Second, 130, 10)
	got := b.RateSeries()
	if calls != 3 || len(got) != 2 {
		t.Fatalf("%d totals read, %d rates: %+v", calls, len(got), got)
	}
	if got[0].Success != 50 || got[0].Error != 5 || got[0].Handled != 55 || got[1].Success != 30 || got[1].Handled != 30 {
		t.Fatalf("rates %+v", got)
	}
	at(10*time.Minute, 130, 10)
	if got := b.RateSeries(); len(got) != 0 {
		t.Fatalf("points older than the window kept: %+v", got)
	}
}
