// Package doneset is the codec of the done-set a worker keeps in the metadata
// of each offset commit: which offsets above the committed one were already
// handled, so that the next owner of the partition skips them.
package doneset

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestDoneSetRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		base   int64
		ranges []Range
	}{
		{"single", 10, []Range{{12, 13}}},
		{"adjacent to base", 5, []Range{{5, 9}}},
		{"several", 100, []Range{{101, 103}, {110, 111}, {1000, 1500}}},
		{"large offsets", 1 << 40, []Range{{1<<40 + 7, 1<<40 + 9}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			meta := Encode(tc.base, tc.ranges)
			set, err := Decode(meta)
			if err != nil {
				t.Fatalf("decode %q: %v", meta, err)
			}
			for o := tc.base; o < tc.ranges[len(tc.ranges)-1].End+3; o++ {
				want := false
				for _, r := range tc.ranges {
					want = want || (o >= r.Start && o < r.End)
				}
				if got := set.Contains(o); got != want {
					t.Fatalf("Contains(%d) = %v, want %v (meta %q)", o, got, want, meta)
				}
			}
		})
	}
}

func TestDoneSetStaysUnderLimitAndKeepsEarliest(t *testing.T) {
	t.Parallel()
	var ranges []Range
	for i := int64(0); i < 5000; i++ {
		ranges = append(ranges, Range{i*1000 + 1, i*1000 + 2 + rand.Int64N(3)})
	}
	meta := Encode(0, ranges)
	if len(meta) > MaxBytes {
		t.Fatalf("metadata is %d bytes, over the %d limit", len(meta), MaxBytes)
	}
	set, err := Decode(meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) == 0 || set[0] != ranges[0] || set[len(set)-1] != ranges[len(set)-1] {
		t.Fatalf("truncation must keep a prefix of the ranges; got %d ranges", len(set))
	}
}

func TestDoneSetForeignAndBrokenMetadata(t *testing.T) {
	t.Parallel()
	if set, err := Decode(""); err != nil || len(set) != 0 {
		t.Fatalf("empty metadata: %v %v", set, err)
	}
	if set, err := Decode("committed by another tool"); err != nil || len(set) != 0 {
		t.Fatalf("foreign metadata: %v %v", set, err)
	}
	for _, bad := range []string{"kw1:", "kw1:x:AA", "kw1:5:!!", "kw1:5:" + strings.Repeat("_", 3)} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%q) = nil error, want one", bad)
		}
	}
	if Encode(3, nil) != "" {
		t.Fatal("an empty done-set must encode to empty metadata")
	}
}

func TestDecode(t *testing.T) {
	meta := Encode(100, []Range{{101, 104}, {105, 110}})
	set, err := Decode(meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 2 || set[0] != (Range{101, 104}) || set[1] != (Range{105, 110}) || set.Count() != 8 {
		t.Errorf("decoded %v", set)
	}
	// Committed at 102: what lies below is ignored.
	if above := set.Above(102); above.Count() != 7 || above[0] != (Range{102, 104}) {
		t.Errorf("Above(102) = %v", above)
	}
	if above := set.Above(200); len(above) != 0 {
		t.Errorf("Above(200) = %v", above)
	}
	if set, err := Decode("another tool's metadata"); err != nil || len(set) != 0 || Is("another tool's metadata") {
		t.Errorf("foreign metadata: %v, %v", set, err)
	}
	if _, err := Decode("kw1:5:!!"); err == nil || !Is("kw1:5:!!") {
		t.Error("a kw1 value that does not parse is not an error")
	}
}

// TestDecimalLenMatchesFormatInt checks the digit count SizeFor uses
// against strconv at every power-of-ten edge and the extremes.
func TestDecimalLenMatchesFormatInt(t *testing.T) {
	vals := []int64{0, math.MaxInt64, math.MinInt64, math.MinInt64 + 1}
	for p := int64(1); p > 0 && p <= math.MaxInt64/10; p *= 10 {
		vals = append(vals, p-1, p, p+1, -p+1, -p, -p-1)
	}
	for _, v := range vals {
		if got, want := decimalLen(v), len(strconv.FormatInt(v, 10)); got != want {
			t.Errorf("decimalLen(%d) = %d, want %d", v, got, want)
		}
	}
}

// TestSizeForDoesNotAllocate: the dispatcher calls it on every admission.
func TestSizeForDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { SizeFor(123456789, 40) }); n != 0 {
		t.Errorf("SizeFor allocates %v times a call, want 0", n)
	}
}
