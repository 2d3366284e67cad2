// Package commit keeps the commit state of a claimed partition and commits
// it.
//
// State is a partition's state: the offsets taken in and not yet done
// (the tracker), the committable offset and its done-set metadata
// (marked), what the broker acknowledged (committed), the floor below
// which everything was done before this claim (from the done-set found at
// start), and the in-memory and done-set budgets. It has its own mutex;
// the engine drives it through its methods, and the Committer reads it
// only through the unexported snapshot-then-ack interface (toCommit,
// ack, acked, release), so no other type ever takes its lock or writes its
// fields.
//
// Committer is the commit loop: every interval it takes each registered
// State's snapshot, sends one OffsetCommit for the session, and acks what
// the broker accepted. Flush and Release make a partition's final commit
// within a deadline. Its lock guards its own registry and is never held
// during I/O; it may take a State's lock under it (acked), never the
// other way round.
package commit
