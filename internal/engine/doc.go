// Package engine is the consume path of a worker: sarama's group handler
// (Consumer: Setup, ConsumeClaim, Cleanup), one partition per claim with
// its dispatcher, the per-key FIFOs that keep each key's messages in
// offset order, the goroutine pool that runs handlers (Pool runs a
// function; it knows nothing of partitions' insides), delivery with
// in-place retries and forwarding to retry tiers or the dead-letter topic,
// the stuck-message watch, the status sample, and the stop budget
// (Deadlines), the one place the shutdown and revoke deadlines are
// computed.
//
// A session's claims read their committed offsets in one request and their
// oldest and newest offsets in one request per leader (prefetch.go);
// StartOffsets, the client the group is made from, answers sarama's start
// offset lookups from that read. Retry tiers that hold nothing are paused
// (TierWatch), or, with their own group member (package worker), not
// claimed at all until TiersHoldWork finds records in them.
//
// Everything is built from Params (the worker's settings, its log, its
// committer, forwarder, metrics and tracing) handed in by package worker;
// nothing here reaches back into a Worker. The commit state of a partition
// is a commit.State, which the partition drives through its methods only
// (Start, Capacity, Admit, FinishAll, Snapshot, ...) and the committer reads
// through its snapshot-then-ack interface.
//
// # Message path
//
//	ConsumeClaim -> dispatcher.run -> partition.admit (commit.State.Admit, key FIFO)
//	  -> Pool -> partition.run -> deliver (handler, its output: emit.go, or
//	     txn.go with exactly-once; retry, forward)
//	  -> partition.complete -> next message of the key
//	  -> partition.settle (commit.State.FinishAll, Stats.Add: in batches)
//
// While a partition's handler is fast (a few microseconds a message), its
// dispatching goroutine runs the ready messages itself instead of pushing
// them to the Pool (inline.go): the same partition.run, the same key
// FIFOs, one of the pool's seats held, so that inline and pooled handlers
// together never exceed WORKER_CONCURRENCY. A slow stretch sends the
// partition back to the pool for a cool-down; a handler that holds the
// dispatcher past handoffAfter loses it to a new dispatching goroutine.
// While nothing of the partition is unfinished, the dispatcher runs what
// it read before admitting it, on one reused task, and tells the commit
// state of the done ones afterwards (commit.State.AdmitDone): no task,
// offset reservation or key lookup per message; a failure or the watchdog
// admits the running message, and chains it in its key's FIFO, before
// anything later is admitted (direct.go). A read holding offsets the
// previous owner handled is admitted lazy instead: it skips the key FIFOs
// until a failure, the budget or the watchdog breaks its run in offset
// order (lazy.go).
//
// With a batch handler (Params.Batch, batch.go) the ready messages are
// gathered and cut into lots instead of being pushed one by one:
//
//	partition.admit -> gather -> cut (a key in one lot at a time) -> Pool
//	  -> partition.runLot -> HandleBatch -> each message's outcome, forward
//	  -> settleInLot (complete, retry, or held back behind its key) -> gather
//
// # Locks
//
// Each type guards its own fields with its own mutex, and no type takes
// another's. The order, when two are held at once (outer first):
//
//	partition.mu -> commit.State.mu
//	partition.mu -> telemetry.Stats.mu (flushStats: a batch of deliveries at once)
//	commit.Committer.mu -> commit.State.mu
//	telemetry's delivery collector mu -> telemetry.Stats.mu
//	txn.Txn's gate (shared) -> partition.mu (exactly-once: a delivery enters
//	  the transaction before it completes, and leaves it under partition.mu)
//	txn.Txn's gate (exclusive) -> commit.Committer.mu -> commit.State.mu
//	  (the committer's transactional round)
//
// No goroutine waits for the transaction's gate while it holds a
// partition's lock, the committer's or a commit state's, so a commit that
// waits for the deliveries inside the transaction to leave cannot wait on
// itself. TierWatch.mu is held only around its own map and sarama's
// metadata lookups.
//
// Under partition.mu the code calls into commit.State (FinishAll, Snapshot,
// Oldest, EachUnfinished; and Capacity, Admit, AdmitDone for a direct
// run's messages), adds its pending deliveries to its
// telemetry.Stats, and takes only leaf locks besides: Clock.mu (when the
// coarse clock wakes up), telemetry's metric vectors, the logger's. It
// never takes Pool.mu, the Committer's lock or another partition's mu;
// neither commit.State nor telemetry.Stats takes any lock while holding
// its own. commit.State calls nothing
// outside itself while it holds its lock (EachUnfinished's callback runs
// under it and must only read the task). Pool.mu, Clock.mu, the status
// board's locks and the broker probe's are leaves: nothing else is locked
// while one is held. The pool pushes tasks after the partition's lock is
// released, and reads which partition a goroutine runs from atomics, so a
// drain waits for its partition's handlers without locking the pool. A
// Prometheus scrape locks each partition's Stats (their own lock), never a
// partition; the status totals read Stats the same way. Completions reach
// the commit state, and deliveries the Stats, in batches (partition.settle:
// when the partition is idle, every 64, when the budget is full, on the
// dispatcher's tick (WORKER_COMMIT_INTERVAL), and before the final commit), so a message costs one lock, the
// partition's, and the other two are taken once per batch.
//
// # Stop
//
// A revoked claim stops in Cleanup (cooperative rebalancing: Messages()
// closes): the dispatcher stops taking in, running handlers get the
// revoke-drain budget, the partition is fenced, and its final commit gets
// the revoke-commit budget (Deadlines.RevokeDrain, RevokeCommit). The
// dispatching goroutine is not ConsumeClaim's (dispatcher.run waits for
// whichever goroutine dispatches last), so a handler blocked inline holds
// up neither the revocation nor the drain, which counts it as it counts a
// pool goroutine's (partition.running); Pool.Stop waits for dispatching
// goroutines too (Pool.track). When the
// worker stops, Deadlines splits the shutdown budget the same way for
// every partition at once; LeaveAfterDrain leaves the group only once the
// final commits are done.
package engine
