package worker

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
const doneSetPrefix = "kw1:"

// maxDoneSetBytes keeps the metadata under Kafka's default limit with room to
// spare. Ranges that do not fit are left out: those messages are handled
// again (at-least-once), never skipped.
const maxDoneSetBytes = 3000

// offsetRange is a half-open range of offsets [start, end).
type offsetRange struct{ start, end int64 }

// encodeDoneSet renders ranges (ascending, disjoint, all at or above base).
func encodeDoneSet(base int64, ranges []offsetRange) string {
	if len(ranges) == 0 {
		return ""
	}
	head := doneSetPrefix + strconv.FormatInt(base, 10) + ":"
	budget := base64.RawURLEncoding.DecodedLen(maxDoneSetBytes - len(head))
	buf := make([]byte, 0, 4*len(ranges))
	prev := base
	for _, r := range ranges {
		var tmp [2 * binary.MaxVarintLen64]byte
		n := binary.PutUvarint(tmp[:], uint64(r.start-prev))
		n += binary.PutUvarint(tmp[n:], uint64(r.end-r.start))
		if len(buf)+n > budget {
			break
		}
		buf = append(buf, tmp[:n]...)
		prev = r.end
	}
	if len(buf) == 0 {
		return ""
	}
	return head + base64.RawURLEncoding.EncodeToString(buf)
}

// encodedDoneSetSize is the length of encodeDoneSet(base, ranges) had it
// no budget: what intake watches to stay under it.
func encodedDoneSetSize(base int64, ranges []offsetRange) int {
	raw := 0
	prev := base
	for _, r := range ranges {
		raw += uvarintLen(uint64(r.start-prev)) + uvarintLen(uint64(r.end-r.start))
		prev = r.end
	}
	return encodedSizeFor(base, raw)
}

// encodedSizeFor is the length of a done-set at base whose ranges take raw
// bytes as uvarints.
func encodedSizeFor(base int64, raw int) int {
	return len(doneSetPrefix) + len(strconv.FormatInt(base, 10)) + 1 + base64.RawURLEncoding.EncodedLen(raw)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// doneSet answers whether an offset was already handled.
type doneSet []offsetRange

// decodeDoneSet parses metadata written by encodeDoneSet. Empty or foreign
// metadata (another tool's) is an empty set, not an error; a kw1 value that
// does not parse is an error, and the caller handles everything again.
func decodeDoneSet(meta string) (doneSet, error) {
	rest, ok := strings.CutPrefix(meta, doneSetPrefix)
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
	var set doneSet
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
		set = append(set, offsetRange{start, start + int64(length)})
		prev = start + int64(length)
	}
	return set, nil
}

// contains reports whether offset lies in one of the ranges.
func (s doneSet) contains(offset int64) bool {
	if len(s) == 0 {
		return false
	}
	i := sort.Search(len(s), func(i int) bool { return s[i].end > offset })
	return i < len(s) && s[i].start <= offset
}
