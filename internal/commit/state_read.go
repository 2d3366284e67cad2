package commit

import (
	"log/slog"
	"slices"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// Snapshot is a State's numbers at one instant, for lag, the status page
// and logs.
type Snapshot struct {
	// Committed is the offset the coordinator last acknowledged from this
	// owner, or the one the claim started at; below 0 when not known.
	Committed int64
	// Marked is the offset marked for the next commit: every offset below it
	// is done.
	Marked int64
	// Resume is where a restart would resume now: the marked offset or the
	// committable one, whichever is further; below 0 when not known.
	Resume int64
	// Held counts admitted messages not done; Ranges the done ranges above
	// the committable offset.
	Held, Ranges int
	// LastAdmitted is the last offset taken in, -1 before the first.
	LastAdmitted int64
	// Pending says that what is marked differs from what was acknowledged.
	Pending bool
	// Skipped counts messages skipped because the previous owner had
	// handled them.
	Skipped int
	// DoneSetFull says intake stopped because the done-set neared the
	// commit metadata limit (else, when intake stopped, the in-flight
	// budget did).
	DoneSetFull bool
}

// Snapshot returns the State's numbers.
func (s *State[T]) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{
		Committed: s.committed, Marked: s.marked, Resume: max(s.marked, s.offsets.committable()),
		Held: s.offsets.heldCount(), Ranges: s.offsets.rangeCount(), LastAdmitted: s.offsets.last,
		Pending: s.pendingCommit(), Skipped: s.skipped, DoneSetFull: s.doneSetFull,
	}
}

// Held is how many admitted messages are not done.
func (s *State[T]) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offsets.heldCount()
}

// Oldest returns the oldest unfinished message, if any.
func (s *State[T]) Oldest() (ref T, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.offsets.oldest()
	return n.ref, ok
}

// EachUnfinished calls fn for the unfinished messages, oldest first, until
// it returns false. fn runs with the State's lock held: it must not call
// the State.
func (s *State[T]) EachUnfinished(fn func(T) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offsets.each(func(n node[T]) bool { return fn(n.ref) })
}

// DoneRanges returns a copy of what is done above the committable offset,
// and that offset.
func (s *State[T]) DoneRanges() (base int64, ranges []doneset.Range) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offsets.committable(), slices.Clone(s.offsets.doneRanges())
}

// NextCommit returns what the next commit would send, the done-set
// brought up to date, and whether one ever outgrew the metadata.
func (s *State[T]) NextCommit() (offset int64, meta string, truncated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metaDirty = true
	s.refreshDoneSet()
	return s.marked, s.meta, s.truncated
}

// LogAttrs say what the coordinator holds for the partition as far as this
// owner knows: the offset it acknowledged (never a sentinel), and what was
// marked beyond it when the last commit did not land.
func (s *State[T]) LogAttrs() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []any
	if s.committed >= 0 {
		out = append(out, slog.Int64("committed", s.committed))
	} else {
		out = append(out, slog.String("committed", "nothing committed"))
	}
	if s.pendingCommit() {
		out = append(out, slog.Int64("marked_not_committed", s.marked))
	}
	return out
}

// The committer's side: committable is how it sees a State, snapshot then
// acknowledge.

func (s *State[T]) session() sarama.ConsumerGroupSession { return s.sess }

// toCommit returns the offset and done-set to commit, or ok false when
// nothing is pending or the final commit was made.
func (s *State[T]) toCommit() (offset int64, meta string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshDoneSet()
	if s.isReleased || !s.pendingCommit() {
		return 0, "", false
	}
	return s.marked, s.meta, true
}

// acked reports whether the coordinator holds everything marked now.
func (s *State[T]) acked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshDoneSet()
	return !s.pendingCommit()
}

// ack records that the coordinator acknowledged offset and meta.
func (s *State[T]) ack(offset int64, meta string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed, s.commitMeta = offset, meta
}

// released reports whether release was called.
func (s *State[T]) released() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isReleased
}

// release stops all further commits: the final one was made, or the
// partition is given up.
func (s *State[T]) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isReleased = true
}
