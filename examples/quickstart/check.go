package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// tracker watches the handler from inside, to prove the worker's guarantees
// at the end instead of taking them on trust.
type tracker struct {
	total      int           // messages this run produced
	runID      string        // marks this run's messages
	allHandled chan struct{} // closed once every message was handled

	inFlight, peak atomic.Int64 // handlers running now, and at most

	mu   sync.Mutex
	seen map[msgID]bool           // this run's messages handled, by key and seq
	done map[int32]map[int64]bool // offsets handled successfully, by partition

	next       map[string]int  // per key, the sequence number expected next
	busy       map[string]bool // keys with a handler running
	distinct   int             // messages of this run handled at least once
	duplicates int             // handled again after succeeding once
	skipped    int             // not produced by this run (earlier runs' leftovers)
	outOfOrder int             // a key's message handled before an earlier one
	overlaps   int             // a key's message started while another of it ran
	wrongKey   int             // the value's key is not the message key
	examples   []string        // the first few violations, for the summary
}

type msgID struct {
	key string
	seq int
}

func newTracker(total int, runID string) *tracker {
	return &tracker{
		total: total, runID: runID, allHandled: make(chan struct{}),
		seen: make(map[msgID]bool, total), done: make(map[int32]map[int64]bool), next: make(map[string]int), busy: make(map[string]bool),
	}
}

// begin records that a handler started on m; the returned func records that
// it returned. Two handlers of one key at once is an ordering violation.
func (t *tracker) begin(m *handler.Message) (end func()) {
	n := t.inFlight.Add(1)
	for p := t.peak.Load(); n > p && !t.peak.CompareAndSwap(p, n); p = t.peak.Load() {
	}
	key := string(m.Key)
	t.mu.Lock()
	if t.busy[key] {
		t.overlaps++
		t.example("%s: offset %d started while another message of the key was running", key, m.Offset)
	}
	t.busy[key] = true
	t.mu.Unlock()

	return func() {
		t.mu.Lock()
		delete(t.busy, key)
		t.mu.Unlock()
		t.inFlight.Add(-1)
	}
}

// handled records that m was handled successfully, checking that it is the
// next message of its key.
func (t *tracker) handled(m *handler.Message) {
	runID, key, seq, err := parseValue(m.Value)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done[m.Partition] == nil {
		t.done[m.Partition] = make(map[int64]bool)
	}
	t.done[m.Partition][m.Offset] = true
	switch {
	case err != nil || runID != t.runID:
		t.skipped++
		return
	case key != string(m.Key):
		t.wrongKey++
		t.example("offset %d: message key %q, but the value says %q", m.Offset, m.Key, key)
		return
	}
	id := msgID{key, seq}
	if t.seen[id] {
		t.duplicates++
		return
	}
	t.seen[id] = true
	if seq != t.next[key] {
		t.outOfOrder++
		t.example("%s: seq %d handled when %d was expected next", key, seq, t.next[key])
	}
	t.next[key] = seq + 1
	t.distinct++
	if t.distinct == t.total {
		close(t.allHandled)
	}
}

// example keeps the first few violations. Called with t.mu held.
func (t *tracker) example(format string, args ...any) {
	if len(t.examples) < 5 {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

func (t *tracker) handledSoFar() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.distinct
}

// reportProgress writes a progress line to w every second until the
// returned stop func is called.
func (t *tracker) reportProgress(w io.Writer, start time.Time) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, lastAt := 0, start
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				n := t.handledSoFar()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				fmt.Fprintf(w, "%4.0fs  handled %7d / %d  %5.1f%%  %7.0f msg/s  in flight %d\n",
					now.Sub(start).Seconds(), n, t.total, 100*float64(n)/float64(t.total), rate, t.inFlight.Load())
				last, lastAt = n, now
			}
		}
	}()
	return func() { close(done); <-exited }
}

// summaryInput is what the summary needs besides the tracker's counts.
type summaryInput struct {
	offsets              []partitionOffsets // read after Run returned
	concurrency          int
	handledIn, stoppedIn time.Duration
}

// summary prints every check and what was measured, and returns how many
// checks failed. Call it after Run has returned: no handler runs any more.
func (t *tracker) summary(w io.Writer, in summaryInput) (failed int) {
	t.mu.Lock()
	defer t.mu.Unlock()

	check := func(ok bool, name, format string, args ...any) {
		status := "ok  "
		if !ok {
			status, failed = "FAIL", failed+1
		}
		fmt.Fprintf(w, "  %s  %-27s %s\n", status, name, fmt.Sprintf(format, args...))
	}
	info := func(name, format string, args ...any) {
		fmt.Fprintf(w, "        %-27s %s\n", name, fmt.Sprintf(format, args...))
	}

	fmt.Fprintln(w, "\nSummary")
	check(t.distinct == t.total && t.wrongKey == 0, "every message handled",
		"%d of %d produced", t.distinct, t.total)
	check(t.outOfOrder == 0 && t.overlaps == 0, "per-key order held",
		"%d keys, each handled 0,1,2,... one at a time (%d out of order, %d overlapping)",
		len(t.next), t.outOfOrder, t.overlaps)

	behind := 0
	for _, p := range in.offsets {
		// A partition that never received a message has nothing to commit.
		if p.committed != p.end && !(p.end == 0 && p.committed == -1) {
			behind++
		}
	}
	check(behind == 0 && len(in.offsets) > 0, "committed = end offsets",
		"%d of %d partitions committed up to their end", len(in.offsets)-behind, len(in.offsets))
	if behind > 0 || len(in.offsets) <= 8 {
		for _, p := range in.offsets {
			info(fmt.Sprintf("  partition %d", p.partition), "committed %d, end %d", p.committed, p.end)
		}
	}
	unhandled := 0
	for _, p := range in.offsets {
		unhandled += t.committedUnhandled(p)
	}
	check(unhandled == 0, "commits only after success",
		"every offset below a committed one was handled (%d were not)", unhandled)
	peak := t.peak.Load()
	check(peak <= int64(in.concurrency), "concurrency within limit",
		"peak %d handlers at once (limit %d)", peak, in.concurrency)

	info("duplicates", "%d (at-least-once allows some after a crash or rebalance; none expected here)", t.duplicates)
	if t.skipped > 0 {
		info("skipped", "%d messages from earlier runs in this topic", t.skipped)
	}
	secs := in.handledIn.Seconds()
	info("elapsed", "%v handling messages (%.0f msg/s); graceful stop took %v",
		in.handledIn.Round(time.Millisecond), float64(t.distinct)/secs, in.stoppedIn.Round(time.Millisecond))
	for _, e := range t.examples {
		info("violation", "%s", e)
	}
	if failed == 0 {
		fmt.Fprintln(w, "PASS: every message handled, in order per key, and committed")
	}
	return failed
}

// committedUnhandled counts the offsets of p the group committed past (from
// the first one this run handled) without their message having been handled:
// the worker must never do that, Ctrl-C midway or not. Called with t.mu held.
func (t *tracker) committedUnhandled(p partitionOffsets) int {
	done := t.done[p.partition]
	if len(done) == 0 {
		return 0 // nothing handled here, so nothing to compare with
	}
	first := p.committed
	for off := range done {
		first = min(first, off)
	}
	n := 0
	for off := first; off < p.committed; off++ {
		if !done[off] {
			n++
		}
	}
	return n
}
