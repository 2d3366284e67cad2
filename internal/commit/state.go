package commit

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// Entry is what the engine keeps per admitted message: the State needs
// only its offset. Entries are held by reference while unfinished (the
// stuck watcher and the status page read the oldest ones back).
type Entry interface {
	comparable
	Offset() int64
}

// Handle names an admitted, unfinished offset of a State: what Finish
// takes.
type Handle int32

// State is one claimed partition's commit state, behind a lock of its own:
// which admitted offsets are unfinished (the tracker), what lies before the
// claim's start or was handled by the previous owner (floor and skip), the
// offset marked for commit with the done-set of what finished behind an
// unfinished offset, and what the coordinator last acknowledged. It also
// keeps the partition's intake budget, which the same numbers decide: how
// many messages are held and whether the done-set has room for more.
//
// The engine admits and finishes messages through it (Admit, Finish); the
// committer takes a snapshot of what to commit and acknowledges what
// landed (see committable in committer.go); the lag, status and log code
// read Snapshot. Nothing outside takes its lock, and it calls nothing
// outside while holding it, so it sits last in any lock order.
type State[T Entry] struct {
	topic     string
	partition int32
	sess      sarama.ConsumerGroupSession // member and generation of its commits
	maxHeld   int                         // WORKER_MAX_IN_FLIGHT
	log       *slog.Logger
	// floor and skip are set before intake starts (NewState, Start) and
	// read by the dispatcher alone afterwards: Handles needs no lock.
	floor int64       // offsets below it lie before the claim's resolved start: done, never handled
	skip  doneset.Set // offsets the previous owner already handled

	freed chan struct{} // wakes a starved dispatcher when budget frees up; buffered 1
	hs    []Handle      // Admit's result buffer; the dispatcher's

	mu          sync.Mutex
	offsets     *tracker[T]
	marked      int64  // next offset to consume: every offset below it is done
	meta        string // done-set of what finished at or above marked
	committed   int64  // marked and meta as last acknowledged by the coordinator
	commitMeta  string
	isReleased  bool        // the final commit was made, or the partition given up: commit nothing more
	metaDirty   bool        // the done ranges changed since meta
	truncated   bool        // a commit had to leave ranges out (logged once)
	skipped     int         // messages skipped because skip held them
	starved     atomic.Bool // the dispatcher holds messages the budget refused; written under mu, read anywhere (Starved)
	doneSetFull bool        // intake stopped because the done-set neared the metadata limit
}

// StateParams are what a State is made from.
type StateParams struct {
	Topic     string
	Partition int32
	Session   sarama.ConsumerGroupSession
	// Initial is the claim's committed offset (a sentinel below 0 when the
	// group has none yet).
	Initial int64
	// Skip and SkipMeta are the previous owner's done-set and the metadata
	// it came in: commits keep that metadata until this owner's own
	// done-set replaces it.
	Skip     doneset.Set
	SkipMeta string
	MaxHeld  int
	Log      *slog.Logger
}

// NewState makes the commit state of a newly claimed partition.
func NewState[T Entry](p StateParams) *State[T] {
	return &State[T]{
		topic: p.Topic, partition: p.Partition, sess: p.Session, maxHeld: p.MaxHeld, log: p.Log,
		skip: p.Skip, meta: p.SkipMeta, floor: 0,
		marked: p.Initial, committed: p.Initial, offsets: newTracker[T](p.Initial),
		freed: make(chan struct{}, 1),
	}
}

// Topic and Partition name the partition.
func (s *State[T]) Topic() string    { return s.topic }
func (s *State[T]) Partition() int32 { return s.partition }

// Start gives a claim that had no committed offset its resolved start:
// offsets below it are taken as done and never handled. Called before
// intake starts.
func (s *State[T]) Start(offset int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.floor, s.marked, s.offsets.start = offset, offset, offset
}

// Freed is signalled when a starved dispatcher may take in more: a message
// less is held, or the done-set shrank.
func (s *State[T]) Freed() <-chan struct{} { return s.freed }

// Handles reports whether the message at offset is to be handled: not
// before the claim's start, and not already handled by the previous owner.
// Only the dispatcher calls it.
func (s *State[T]) Handles(offset int64) bool {
	return offset >= s.floor && !s.skip.Contains(offset)
}

// Capacity says how much of a batch of n messages, the last at offset
// last, may be taken in: room is what the in-flight budget has left, fit
// how many the done-set has room for (see doneSetRoom).
func (s *State[T]) Capacity(n int, last int64) (room, fit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fit = s.doneSetRoom(n, last)
	s.doneSetFull = fit == 0
	return s.maxHeld - s.offsets.heldCount(), fit
}

// Admit records, in offset order, the offsets of a batch taken from the
// claim: refs are those to be handled (a subsequence of offsets), each
// reserved as unfinished; the rest are skipped as done. It returns each
// ref's handle, in a buffer valid until the next call. refused says that
// the budget stopped intake short of the batch; first is the batch's first
// offset. full reports that intake must wait (refused, or the done-set
// left no room): the dispatcher then waits for Freed, which Admit signals
// at once when completions freed room meanwhile. Only the dispatcher calls
// it, after Capacity for the same batch.
func (s *State[T]) Admit(offsets []int64, refs []T, refused bool, first int64) (hs []Handle, full bool) {
	hs = s.hs[:0]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range offsets {
		if len(refs) == 0 || refs[0].Offset() != o {
			s.offsets.skip(o) // before the start, or the previous owner did it
			s.skipped++
			continue
		}
		hs = append(hs, Handle(s.offsets.reserve(o, refs[0])))
		refs = refs[1:]
	}
	s.metaDirty = true
	s.markCommittable()
	full = refused || s.doneSetFull
	if full {
		s.starved.Store(true)
		if s.maxHeld > s.offsets.heldCount() && (!s.doneSetFull || s.doneSetRoom(1, first) > 0) {
			// Completions since the room was counted freed some without a
			// starved dispatcher to wake: wake it now, or it would wait.
			s.wake()
		}
	}
	s.hs = hs
	return hs, full
}

// AdmitDone records that the messages up to offset last, admitted after
// everything admitted before, were all handled already: the engine ran them
// before admitting them (its direct runs), one at a time, each done before
// the next started. With nothing unfinished the committable offset moves to
// last+1; otherwise they are done above the unfinished ones. Only the
// dispatcher calls it, in offset order with Admit.
func (s *State[T]) AdmitDone(last int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last <= s.offsets.last {
		return // nothing new
	}
	s.offsets.skip(last)
	s.metaDirty = true
	s.markCommittable()
}

// Finish records the message of handle h as done: the committable offset
// moves when it was the oldest unfinished one, and a starved dispatcher is
// woken. It reports whether nothing is left unfinished.
func (s *State[T]) Finish(h Handle) (idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.offsets.finish(int32(h)) {
		s.metaDirty = true // done behind an unfinished one
	}
	s.markCommittable()
	if s.starved.Load() {
		s.wake()
	}
	return s.offsets.heldCount() == 0
}

// FinishAll is Finish for several handles at once, in the order given,
// under one lock. It reports whether nothing is left unfinished; with no
// handles it does nothing and reports false.
func (s *State[T]) FinishAll(hs []Handle) (idle bool) {
	if len(hs) == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hs {
		if !s.offsets.finish(int32(h)) {
			s.metaDirty = true // done behind an unfinished one
		}
	}
	s.markCommittable()
	if s.starved.Load() {
		s.wake()
	}
	return s.offsets.heldCount() == 0
}

// Starved reports, without taking the lock, that the dispatcher waits for
// budget (see Admit): a caller that holds finished messages back to
// finish them in a batch should finish them now.
func (s *State[T]) Starved() bool { return s.starved.Load() }

// markCommittable marks the committable offset. Called with s.mu held.
func (s *State[T]) markCommittable() {
	if c := s.offsets.committable(); c > s.marked {
		s.marked = c
	}
}

// wake tells a starved dispatcher that it may take in more. Called with
// s.mu held.
func (s *State[T]) wake() {
	s.starved.Store(false)
	select {
	case s.freed <- struct{}{}:
	default:
	}
}
