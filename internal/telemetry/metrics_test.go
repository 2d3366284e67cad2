package telemetry

import (
	"testing"
	"time"
)

func TestNumBucketsMatches(t *testing.T) {
	t.Parallel()
	if numBuckets != len(durationBuckets) {
		t.Fatalf("numBuckets = %d, len(durationBuckets) = %d", numBuckets, len(durationBuckets))
	}
}

func TestLocalHistogramBuckets(t *testing.T) {
	t.Parallel()
	var h localHist
	for _, v := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 6 * time.Millisecond, 11 * time.Second} {
		h.observe(v)
	}
	var tot histTotal
	tot.add(&h)
	// Bounds are inclusive: 0.005 falls in the first bucket, with 0.001.
	if tot.count != 4 || tot.buckets[0] != 2 || tot.buckets[1] != 3 || tot.buckets[numBuckets-1] != 3 {
		t.Fatalf("cumulative buckets %v count %d", tot.buckets, tot.count)
	}
	if want := 11.012; tot.sum < want-1e-9 || tot.sum > want+1e-9 {
		t.Fatalf("sum %v s, want %v", tot.sum, want)
	}
}
