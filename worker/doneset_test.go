package worker

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDoneSetRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		base   int64
		ranges []offsetRange
	}{
		{"single", 10, []offsetRange{{12, 13}}},
		{"adjacent to base", 5, []offsetRange{{5, 9}}},
		{"several", 100, []offsetRange{{101, 103}, {110, 111}, {1000, 1500}}},
		{"large offsets", 1 << 40, []offsetRange{{1<<40 + 7, 1<<40 + 9}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			meta := encodeDoneSet(tc.base, tc.ranges)
			set, err := decodeDoneSet(meta)
			if err != nil {
				t.Fatalf("decode %q: %v", meta, err)
			}
			for o := tc.base; o < tc.ranges[len(tc.ranges)-1].end+3; o++ {
				want := false
				for _, r := range tc.ranges {
					want = want || (o >= r.start && o < r.end)
				}
				if got := set.contains(o); got != want {
					t.Fatalf("contains(%d) = %v, want %v (meta %q)", o, got, want, meta)
				}
			}
		})
	}
}

func TestDoneSetStaysUnderLimitAndKeepsEarliest(t *testing.T) {
	t.Parallel()
	var ranges []offsetRange
	for i := int64(0); i < 5000; i++ {
		ranges = append(ranges, offsetRange{i*1000 + 1, i*1000 + 2 + rand.Int64N(3)})
	}
	meta := encodeDoneSet(0, ranges)
	if len(meta) > maxDoneSetBytes {
		t.Fatalf("metadata is %d bytes, over the %d limit", len(meta), maxDoneSetBytes)
	}
	set, err := decodeDoneSet(meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) == 0 || set[0] != ranges[0] || set[len(set)-1] != ranges[len(set)-1] {
		t.Fatalf("truncation must keep a prefix of the ranges; got %d ranges", len(set))
	}
}

func TestDoneSetForeignAndBrokenMetadata(t *testing.T) {
	t.Parallel()
	if set, err := decodeDoneSet(""); err != nil || len(set) != 0 {
		t.Fatalf("empty metadata: %v %v", set, err)
	}
	if set, err := decodeDoneSet("committed by another tool"); err != nil || len(set) != 0 {
		t.Fatalf("foreign metadata: %v %v", set, err)
	}
	for _, bad := range []string{"kw1:", "kw1:x:AA", "kw1:5:!!", "kw1:5:" + strings.Repeat("_", 3)} {
		if _, err := decodeDoneSet(bad); err == nil {
			t.Errorf("decodeDoneSet(%q) = nil error, want one", bad)
		}
	}
	if encodeDoneSet(3, nil) != "" {
		t.Fatal("an empty done-set must encode to empty metadata")
	}
}
