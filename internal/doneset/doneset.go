// Package doneset is the codec of the done-set a worker keeps in the metadata
// of each offset commit: which offsets above the committed one were already
// handled, so that the next owner of the partition skips them.
package doneset

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// A done-set records which offsets above the committed offset were already
// handled successfully. Per-key concurrency means later offsets often finish
// while an earlier one is still running; the committed offset cannot move
// past that earlier one, so without this record a restart or a new owner
// would handle the later ones a second time.
//
// It travels in the commit's metadata string (Kafka keeps it beside the
// offset; offset.metadata.max.bytes is 4096 by default):
//
//	kw1:<base>:<base64url of uvarints: gap₀ len₀ gap₁ len₁ ...>
//
// Range i covers [start_i, start_i+len_i) where start_0 = base+gap_0 and
// start_i = end_{i-1}+gap_i. Done is permanent, so a done-set that is older
// than the offset committed beside it is still true; a reader ignores what
// lies below the committed offset.
const Prefix = "kw1:"

// MaxBytes keeps the metadata under Kafka's default limit with room to
// spare. Ranges that do not fit are left out: those messages are handled
// again (at-least-once), never skipped.
const MaxBytes = 3000

// Range is the half-open range of offsets [Start, End).
type Range struct{ Start, End int64 }

// Len is the number of offsets in r.
func (r Range) Len() int64 { return r.End - r.Start }

// Encode renders ranges (ascending, disjoint, all at or above base).
func Encode(base int64, ranges []Range) string {
	if len(ranges) == 0 {
		return ""
	}
	head := Prefix + strconv.FormatInt(base, 10) + ":"
	budget := base64.RawURLEncoding.DecodedLen(MaxBytes - len(head))
	buf := make([]byte, 0, 4*len(ranges))
	prev := base
	for _, r := range ranges {
		var tmp [2 * binary.MaxVarintLen64]byte
		n := binary.PutUvarint(tmp[:], uint64(r.Start-prev))
		n += binary.PutUvarint(tmp[n:], uint64(r.End-r.Start))
		if len(buf)+n > budget {
			break
		}
		buf = append(buf, tmp[:n]...)
		prev = r.End
	}
	if len(buf) == 0 {
		return ""
	}
	return head + base64.RawURLEncoding.EncodeToString(buf)
}

// EncodedSize is the length of Encode(base, ranges) had it
// no budget: what intake watches to stay under it.
func EncodedSize(base int64, ranges []Range) int {
	raw := 0
	prev := base
	for _, r := range ranges {
		raw += UvarintLen(uint64(r.Start-prev)) + UvarintLen(uint64(r.End-r.Start))
		prev = r.End
	}
	return SizeFor(base, raw)
}

// SizeFor is the length of a done-set at base whose ranges take raw
// bytes as uvarints.
func SizeFor(base int64, raw int) int {
	return len(Prefix) + decimalLen(base) + 1 + base64.RawURLEncoding.EncodedLen(raw)
}

// decimalLen is len(strconv.FormatInt(v, 10)), without the string: the
// dispatcher asks for it on every admission.
func decimalLen(v int64) int {
	n := 1
	u := uint64(v)
	if v < 0 {
		n, u = 2, -u
	}
	for ; u >= 10; u /= 10 {
		n++
	}
	return n
}

func UvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Set lists, ascending and disjoint, the offsets a worker handled above the
// offset it committed; it answers whether an offset was already handled.
type Set []Range

// Decode parses metadata written by Encode. Empty or foreign
// metadata (another tool's) is an empty set, not an error; a kw1 value that
// does not parse is an error, and the caller handles everything again.
func Decode(meta string) (Set, error) {
	rest, ok := strings.CutPrefix(meta, Prefix)
	if !ok {
		return nil, nil
	}
	baseStr, enc, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, fmt.Errorf("done-set %q: no base", meta)
	}
	base, err := strconv.ParseInt(baseStr, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("done-set %q: base: %w", meta, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("done-set %q: %w", meta, err)
	}
	var set Set
	prev := base
	for len(raw) > 0 {
		gap, n := binary.Uvarint(raw)
		if n <= 0 {
			return nil, errors.New("done-set: truncated gap")
		}
		raw = raw[n:]
		length, m := binary.Uvarint(raw)
		if m <= 0 || length == 0 {
			return nil, errors.New("done-set: truncated or empty range")
		}
		raw = raw[m:]
		start := prev + int64(gap)
		set = append(set, Range{start, start + int64(length)})
		prev = start + int64(length)
	}
	return set, nil
}

// contains reports whether offset lies in one of the ranges.
func (s Set) Contains(offset int64) bool {
	if len(s) == 0 {
		return false
	}
	i := sort.Search(len(s), func(i int) bool { return s[i].End > offset })
	return i < len(s) && s[i].Start <= offset
}

// Is reports whether metadata is in the done-set format, whether or not it
// parses.
func Is(metadata string) bool { return strings.HasPrefix(metadata, Prefix) }

// Above returns the part of s at or above committed, which is what a worker
// resuming at committed skips: a done-set may be older than the offset
// committed beside it, and what lies below the commit is ignored.
func (s Set) Above(committed int64) Set {
	var out Set
	for _, r := range s {
		if r.End <= committed {
			continue
		}
		out = append(out, Range{Start: max(r.Start, committed), End: r.End})
	}
	return out
}

// Count is the number of offsets in s.
func (s Set) Count() int64 {
	var n int64
	for _, r := range s {
		n += r.Len()
	}
	return n
}
