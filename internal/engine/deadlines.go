package engine

import (
	"sync"
	"time"
)

// The stop budget: every deadline of a shutdown or a revocation is worked
// out here, from one clock. When Run's context is cancelled at T, every
// stage of the shutdown works to deadlines derived from T, so that Run
// returns by T + ShutdownTimeout + FinalCommitGrace + CloseTimeout at the
// latest, whatever the broker or the handlers do:
//
//   - running handlers may finish until T + ShutdownTimeout (DrainBy);
//   - final commits are retried (through a rebalance in flight) until
//     T + ShutdownTimeout + FinalCommitGrace (CommitBy), or less when they
//     land;
//   - leaving the group and closing the connections get CloseTimeout;
//   - handler goroutines that ignored their cancelled context are
//     abandoned at DrainBy, never waited for twice.
//
// A revoked partition (a rebalance, not a stop) gets RevokeDrain to drain
// and RevokeCommit to commit, from the revocation.
const (
	FinalCommitGrace = 2 * time.Second
	CloseTimeout     = time.Second
)

// Deadlines holds the stop budget of one Run.
type Deadlines struct {
	shutdown  time.Duration // WORKER_SHUTDOWN_TIMEOUT
	rebalance time.Duration // sarama's Consumer.Group.Rebalance.Timeout
	once      sync.Once
	at        time.Time // DrainBy, once the stop began
}

// NewDeadlines makes the budget of a run with the given shutdown timeout
// and the group's rebalance timeout.
func NewDeadlines(shutdown, rebalance time.Duration) *Deadlines {
	return &Deadlines{shutdown: shutdown, rebalance: rebalance}
}

// DrainBy is the moment running handlers must have finished by: the
// shutdown timeout after the first call, which the worker makes as soon as
// Run's context is done.
func (d *Deadlines) DrainBy() time.Time {
	d.once.Do(func() { d.at = time.Now().Add(d.shutdown) })
	return d.at
}

// CommitBy is the moment final commits are given up.
func (d *Deadlines) CommitBy() time.Time { return d.DrainBy().Add(FinalCommitGrace) }

// RevokeDrain is how long a revoked partition's running handlers may
// finish: four fifths of the rebalance timeout, less the time a holding
// dispatcher may take to notice the revocation (stallAfter), leaving room
// to commit before sarama and the coordinator give up on this member.
func (d *Deadlines) RevokeDrain() time.Duration {
	return max(d.rebalance*4/5-stallAfter, d.rebalance/2)
}

// RevokeCommit is how long a revoked partition's final commit may take.
func (d *Deadlines) RevokeCommit() time.Duration { return d.rebalance * 9 / 10 }

// StartFlush is how long a new claim waits for its start offset to be
// committed before it starts handling anyway.
func (d *Deadlines) StartFlush() time.Duration { return min(startFlushTimeout, d.RevokeDrain()) }
