package engine

import (
	"math"
	"testing"
	"time"
)

// The processing delay is the wall clock at the first delivery less the
// message's timestamp, in integers; what a producer's clock or a garbage
// timestamp can put there neither goes negative nor overflows.
func TestMessageDelay(t *testing.T) {
	t.Parallel()
	began := 90 * time.Second // on the coarse clock
	at := clockAnchor.Add(began)
	for _, tc := range []struct {
		name   string
		ts     time.Time
		want   time.Duration
		wantOK bool
	}{
		{"a second old", at.Add(-time.Second), time.Second, true},
		{"to the millisecond", at.Add(-1234 * time.Millisecond), 1234 * time.Millisecond, true},
		{"sub-millisecond part kept", at.Add(-1500 * time.Microsecond), 1500 * time.Microsecond, true},
		{"producer clock ahead: no delay", at.Add(3 * time.Second), 0, true},
		{"no timestamp", time.Time{}, 0, false},
		{"far future (year 3000): not measured", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 0, false},
		{"far past (year 1000): not measured", time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), 0, false},
		{"Kafka's largest timestamp", time.UnixMilli(math.MaxInt64), 0, false},
		{"Kafka's smallest timestamp", time.UnixMilli(math.MinInt64), 0, false},
		{"epoch", time.UnixMilli(0), time.Duration(at.UnixNano()), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := messageDelay(began, tc.ts)
			if ok != tc.wantOK || got != tc.want {
				t.Fatalf("messageDelay(%v) = %v, %v; want %v, %v", tc.ts, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
