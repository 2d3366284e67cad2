package engine

// Lazy keys. A key's FIFO (keyOf, chain) keeps a key's messages in order
// when they may run on several goroutines at once. An inline stretch runs
// its messages one after another on one goroutine, in offset order: while
// nothing else of the partition is unfinished, that order is the key's
// order, and no FIFO is needed. So admit, when the messages it admits will
// run inline and nothing else of the partition is unfinished, admits them
// lazy (task.lazy): without looking their keys up. The lookup (a hash of
// the key, a map probe, the first touch of the key's bytes) was the largest
// cost of a no-op message left once inline runs took away the hand-over.
//
// A lazy message gets its FIFO as soon as the stretch can no longer vouch
// for its order, always under p.mu and before anything of the partition
// can start out of turn:
//
//   - it fails (run): it stays unfinished for its retry in place, so it is
//     chained, and the stretch ends there (runSlot.lazyBroke);
//   - the stretch ends with messages not started (over its budget, or
//     after such a failure): they are chained in offset order, and only
//     those that wait for nothing go to the pool (inlineRun.end);
//   - the watchdog takes the stretch (handoff): the message running, unless
//     it is done, and then the rest, the same way.
//
// An admission is lazy only when everything unfinished of the partition is
// the lazy messages admitted since the last stretch, waiting to run
// (partition.lazyQ): messages admitted while one is retried, in the pool or
// waiting in a FIFO are chained as before, and so wait behind the earlier
// ones of their keys. Retry-tier partitions never admit lazy: a message not
// yet due stays unfinished without failing (notDue).
//
// Since direct runs (direct.go), which take a read whenever nothing of the
// partition is unfinished and no offset of it was handled by the previous
// owner, a read is admitted lazy only in that last case.
//
// The key map is the dispatcher's, and every lookup here is made by whoever
// holds the dispatcher's part: the dispatching goroutine (run's failure path
// and end), or the watchdog, which owns the dispatcher's fields once it took
// the stretch and chains the running message before anyone else can look.

// admitsLazy reports whether messages admitted now, run inline, may be
// admitted lazy. Called by the dispatcher with p.mu held.
func (p *partition) admitsLazy() bool {
	return p.inline && p.hop.Tier == 0 && p.ordering != OrderNone &&
		(p.unfinished == 0 || p.lazyQ && p.unfinished == len(p.runQ))
}

// chainLazy gives t its key's FIFO if it is lazy (admitted lazy, neither
// done nor chained since), and reports whether it must wait for an earlier
// message of its key. Called with p.mu held, by the dispatcher's holder.
func (p *partition) chainLazy(t *task) (waits bool) {
	if !t.lazy {
		return false
	}
	t.lazy = false
	t.key = p.keyOf(t.msg.Key)
	return p.chain(t)
}

// releaseRest hands to the pool the messages of a stretch that did not
// start, chaining the lazy ones first, in order: those that wait for an
// earlier message of their key are left in its FIFO. running is the
// stretch's message that started last, or nil: unless done, it is chained
// before them (handoff). The dispatcher's holder calls it.
func (p *partition) releaseRest(running *task, rest []*task) {
	if !p.lazyQ { // chained at admission, and ready
		p.pool.pushAll(rest)
		return
	}
	p.mu.Lock()
	if running != nil {
		p.chainLazy(running)
	}
	ready := p.lazyReady[:0]
	for _, t := range rest {
		if !p.chainLazy(t) {
			ready = append(ready, t)
		}
	}
	p.mu.Unlock()
	p.pool.pushAll(ready)
	clear(ready)
	p.lazyReady = ready[:0]
}
