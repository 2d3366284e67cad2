package commit

import (
	"log/slog"

	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// doneSetRoom returns how many of n messages, the last at offset last, may
// be taken in without the done-set outgrowing its share of the commit
// metadata: intake stops while its encoding would use more than 90% of the
// budget, each message counted as adding a range of the widest encoding
// the batch can give, so that ranges never have to be dropped (a restart
// would handle those messages again) through intake. Called with s.mu
// held.
func (s *State[T]) doneSetRoom(n int, last int64) int {
	ranges := s.offsets.rangeCount()
	if ranges+n < 64 || n == 0 { // 64 ranges of the widest encoding still fit
		return n
	}
	base := s.offsets.committable()
	span := uint64(max(last-base, 0))
	perRange := 2 * doneset.UvarintLen(span) // a gap and a length, each at most the span
	limit := doneset.MaxBytes * 9 / 10
	// Bounds first, so that the unfinished list need not be walked: every
	// range held now at its widest, or the size at the last walk plus the
	// most the changes since can have added. When a bound fits, so does
	// the exact size.
	if doneset.SizeFor(base, (ranges+n)*perRange) <= limit ||
		doneset.SizeFor(base, s.offsets.doneSizeBound(perRange/2)+n*perRange) <= limit {
		return n
	}
	left := limit - doneset.EncodedSize(base, s.offsets.doneRanges())
	if left <= 0 {
		return 0
	}
	fit := left * 3 / 4 / perRange // base64 carries 3 bytes in 4
	return min(n, fit)
}

// refreshDoneSet records, in the metadata of the next commit, which
// messages above the committable offset are already done, so that no later
// owner of the partition handles them again. Called with s.mu held.
func (s *State[T]) refreshDoneSet() {
	if !s.metaDirty {
		return
	}
	s.metaDirty = false
	base := s.offsets.committable()
	ranges := s.offsets.doneRanges()
	// Carry forward what the previous owner finished beyond what this owner
	// has taken in yet, or a commit now would erase it.
	if len(s.skip) > 0 {
		next := max(s.offsets.last+1, base)
		var carried []doneset.Range
		for _, r := range s.skip {
			if r.End > next {
				carried = append(carried, doneset.Range{Start: max(r.Start, next), End: r.End})
			}
		}
		if len(carried) > 0 {
			ranges = append(append([]doneset.Range(nil), ranges...), carried...)
		}
	}
	if base < 0 {
		return
	}
	if size := doneset.EncodedSize(base, ranges); size > doneset.MaxBytes && !s.truncated {
		// Intake stopped at 90%, but messages already held can still split
		// the ranges further when they finish out of order.
		s.truncated = true
		s.log.Warn("the record of finished offsets outgrew the commit metadata; the highest ranges are left out, "+
			"and those messages will be handled again if the partition changes owner before its oldest message finishes",
			attr.Topic(s.topic), attr.Partition(s.partition),
			slog.Int64("committed", base), slog.Int("done_ranges", len(ranges)),
			slog.Int("encoded_bytes", size), slog.Int("limit_bytes", doneset.MaxBytes))
	}
	s.meta = doneset.Encode(base, ranges)
	s.marked = max(s.marked, base)
}

// pendingCommit reports whether marked or meta differ from what the
// coordinator last acknowledged. Called with s.mu held.
func (s *State[T]) pendingCommit() bool {
	return s.marked >= 0 && (s.marked != s.committed || s.meta != s.commitMeta)
}
