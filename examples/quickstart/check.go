package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// tracker watches the handler from inside, to prove the worker's guarantees
// at the end instead of taking them on trust.
type tracker struct {
	total, keys int           // messages this run produced, over how many keys
	runID       string        // marks this run's messages
	allFinal    chan struct{} // closed once every message was handled or failed for good

	inFlight, peak atomic.Int64 // handlers running now, and at most

	mu       sync.Mutex
	seen     map[msgID]bool           // this run's messages handled successfully
	poisoned map[msgID]bool           // failed for good (retry.Permanent): bound for the DLQ
	done     map[int32]map[int64]bool // offsets handled successfully (or dead-lettered), by partition

	next       map[string]int  // per key, the lowest sequence number allowed next
	busy       map[string]bool // keys with a handler running
	distinct   int             // messages of this run handled successfully
	retried    int             // of those, handled on a second or later delivery
	maxAttempt int             // the highest retry.Attempt seen on a success
	failures   int             // deliveries that returned an error
	duplicates int             // handled again after succeeding once
	skipped    int             // not produced by this run (earlier runs' leftovers)
	outOfOrder int             // a key's message handled before an earlier one was finished
	overlaps   int             // a key's message started while another of it ran
	wrongKey   int             // the value's key is not the message key
	examples   []string        // the first few violations, for the summary
}

type msgID struct {
	key string
	seq int
}

func newTracker(total, keys int, runID string) *tracker {
	return &tracker{
		total: total, keys: keys, runID: runID, allFinal: make(chan struct{}),
		seen: make(map[msgID]bool, total), poisoned: make(map[msgID]bool), done: make(map[int32]map[int64]bool),
		next: make(map[string]int), busy: make(map[string]bool),
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

// handled records that m was handled successfully on delivery attempt,
// checking that every earlier message of its key was finished first:
// handled, or failed for good (a dead-lettered message no longer holds its
// key's later ones back).
func (t *tracker) handled(m *handler.Message, attempt int) {
	runID, key, seq, _, err := parseValue(m.Value)
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
	for s := t.next[key]; s < seq; s++ {
		if !t.poisoned[msgID{key, s}] {
			t.outOfOrder++
			t.example("%s: seq %d handled before seq %d was handled or failed for good", key, seq, s)
			break
		}
	}
	if seq < t.next[key] {
		t.outOfOrder++
		t.example("%s: seq %d handled after seq %d", key, seq, t.next[key]-1)
	}
	t.next[key] = max(t.next[key], seq+1)
	t.distinct++
	if attempt > 1 {
		t.retried++
	}
	t.maxAttempt = max(t.maxAttempt, attempt)
	t.checkFinal()
}

// failed records that the handler returns err for m, and returns err.
func (t *tracker) failed(m *handler.Message, err error) error {
	runID, key, seq, _, perr := parseValue(m.Value)
	if perr != nil || runID != t.runID {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures++
	if id := (msgID{key, seq}); retry.IsPermanent(err) && !t.poisoned[id] {
		t.poisoned[id] = true
		t.checkFinal()
	}
	return err
}

// checkFinal closes allFinal once every message was handled or failed for
// good. Called with t.mu held.
func (t *tracker) checkFinal() {
	select {
	case <-t.allFinal:
	default:
		if t.distinct+len(t.poisoned) >= t.total {
			close(t.allFinal)
		}
	}
}

// example keeps the first few violations. Called with t.mu held.
func (t *tracker) example(format string, args ...any) {
	if len(t.examples) < 5 {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

func (t *tracker) soFar() (handled, retried, poisoned int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.distinct, t.retried, len(t.poisoned)
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
				n, retried, poisoned := t.soFar()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				fmt.Fprintf(w, "%4.0fs  handled %7d / %d  %5.1f%%  %7.0f msg/s  in flight %3d  retried %4d  failed for good %3d\n",
					now.Sub(start).Seconds(), n, t.total, 100*float64(n)/float64(t.total), rate, t.inFlight.Load(), retried, poisoned)
				last, lastAt = n, now
			}
		}
	}()
	return func() { close(done); <-exited }
}

// summaryInput is what the summary needs besides the tracker's counts.
type summaryInput struct {
	offsets              []partitionOffsets // read after Run returned
	deadLetters          []deadLetter       // this run's, read after Run returned
	otherDeadLetters     int                // earlier runs' records in the DLQ topic
	dlqTopic             string
	logs                 map[string]int // the worker's warnings and errors, by level and message
	metrics              workerMetrics
	concurrency          int
	handledIn, stoppedIn time.Duration
}

// nameWidth is the width of the summary's name column: the longest name,
// "every message handled or DLQ", and a space.
const nameWidth = 29

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
		fmt.Fprintf(w, "  %s  %-*s %s\n", status, nameWidth, name, fmt.Sprintf(format, args...))
	}
	info := func(name, format string, args ...any) {
		fmt.Fprintf(w, "        %-*s %s\n", nameWidth, name, fmt.Sprintf(format, args...))
	}

	// Every produced message must have ended exactly once: handled, or in
	// the dead-letter topic, and only those the handler failed for good.
	dead := make(map[msgID]int, len(in.deadLetters))
	errTypes, attempts := map[string]int{}, map[int]int{}
	for _, d := range in.deadLetters {
		dead[d.id]++
		errTypes[d.info.ErrorType]++
		attempts[d.info.Attempt]++
		if t.done[d.info.OriginalPartition] == nil {
			t.done[d.info.OriginalPartition] = make(map[int64]bool)
		}
		t.done[d.info.OriginalPartition][d.info.OriginalOffset] = true
	}
	var lost, gaps, both, twice, unplanned int
	for i := range t.total {
		id := msgID{customerKey(i % t.keys), i / t.keys}
		switch d := dead[id]; {
		case t.seen[id] && d > 0:
			both++
		case !t.seen[id] && d == 0:
			lost++
			if id.seq < t.next[id.key] { // a later message of the key was handled
				gaps++
				t.example("%s seq %d: skipped, yet neither handled nor dead-lettered", id.key, id.seq)
			}
		case d > 1:
			twice++
		}
	}
	for id := range dead {
		if !t.poisoned[id] {
			unplanned++
			t.example("%s seq %d: dead-lettered, but the handler never failed it for good", id.key, id.seq)
		}
	}

	fmt.Fprintln(w, "\nSummary")
	check(lost == 0 && both == 0 && twice == 0 && unplanned == 0 && t.wrongKey == 0 && len(in.deadLetters) == len(dead),
		"every message handled or DLQ", "%d of %d produced: %d handled, %d dead-lettered (%d neither, %d both, %d dead-lettered twice)",
		t.distinct+len(dead), t.total, t.distinct, len(dead), lost, both, twice)
	check(t.outOfOrder == 0 && t.overlaps == 0 && gaps == 0, "per-key order held",
		"%d keys, each handled in produce order, one at a time, skipping only dead-lettered messages (%d out of order, %d overlapping, %d skipped but not dead-lettered)",
		min(t.keys, t.total), t.outOfOrder, t.overlaps, gaps)

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
	check(unhandled == 0, "commits only when finished",
		"every offset below a committed one was handled or dead-lettered (%d were not)", unhandled)
	peak := t.peak.Load()
	check(peak <= int64(in.concurrency), "concurrency within limit",
		"peak %d handlers at once (limit %d)", peak, in.concurrency)

	// The worker's metrics must tell the story the handler saw. (Messages
	// of earlier runs in the topic count there too, and would not match.)
	m := in.metrics
	agree := m.processed["success"] == t.distinct && m.processed["error"] == t.failures-len(t.poisoned) &&
		m.processed["dead_letter"] == len(in.deadLetters) && m.processed["retry"] == 0
	if t.skipped == 0 {
		check(agree, "metrics agree", "%s: %s (the handler saw %d successes, %d transient failures)",
			"kafkaworker_messages_processed_total", counts(m.processed), t.distinct, t.failures-len(t.poisoned))
	} else {
		info("metrics", "kafkaworker_messages_processed_total: %s", counts(m.processed))
	}
	info("", "kafkaworker_forward_errors_total: %d (failed publishes to retry or DLQ topics, each retried)", m.forwardErrors)

	info("retried", "%d messages succeeded on a later delivery (at most attempt %d); %d deliveries failed, %d of them for good",
		t.retried, t.maxAttempt, t.failures, len(t.poisoned))
	info("dead-lettered", "%d in %s: kw-error-type %s; kw-attempt %s", len(in.deadLetters), in.dlqTopic, counts(errTypes), counts(attempts))
	if in.otherDeadLetters > 0 {
		info("", "plus %d records of earlier runs, left out of the checks", in.otherDeadLetters)
	}
	info("worker warnings/errors", "%s", counts(in.logs))
	info("duplicates", "%d (at-least-once allows some after a crash or rebalance; none expected here)", t.duplicates)
	if t.skipped > 0 {
		info("skipped", "%d messages from earlier runs in this topic", t.skipped)
	}
	secs := in.handledIn.Seconds()
	info("elapsed", "%v handling messages (%.0f msg/s); graceful stop took %v",
		in.handledIn.Round(time.Millisecond), float64(t.distinct+len(t.poisoned))/secs, in.stoppedIn.Round(time.Millisecond))
	for _, e := range t.examples {
		info("violation", "%s", e)
	}
	if failed == 0 {
		fmt.Fprintln(w, "PASS: every message handled or dead-lettered, in order per key, and committed")
	}
	return failed
}

// counts renders a tally as "a: 3, b: 1", largest first; "none" if empty.
func counts[K comparable](m map[K]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b K) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return cmp.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%v: %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// workerMetrics is what the summary reads from the worker's Prometheus
// registry, summed over topics and partitions.
type workerMetrics struct {
	processed     map[string]int // deliveries by result: success, error, retry, dead_letter
	forwardErrors int
}

func readMetrics(reg *prometheus.Registry) workerMetrics {
	m := workerMetrics{processed: map[string]int{}}
	families, err := reg.Gather()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading the worker's metrics:", err)
	}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			switch f.GetName() {
			case worker.MetricMessagesProcessed:
				for _, l := range s.GetLabel() {
					if l.GetName() == "result" {
						m.processed[l.GetValue()] += int(s.GetCounter().GetValue())
					}
				}
			case worker.MetricForwardErrors:
				m.forwardErrors += int(s.GetCounter().GetValue())
			}
		}
	}
	return m
}

// logTally is the worker's slog.Handler in the demo: it passes the first
// few records of each level and message on, and counts them all, so that
// two thousand "retrying in place" warnings do not bury the output.
type logTally struct {
	h     slog.Handler
	show  int
	mu    *sync.Mutex
	count map[string]int
}

func newLogTally(h slog.Handler, show int) *logTally {
	return &logTally{h: h, show: show, mu: new(sync.Mutex), count: map[string]int{}}
}

func (l *logTally) Enabled(ctx context.Context, lv slog.Level) bool { return l.h.Enabled(ctx, lv) }

func (l *logTally) Handle(ctx context.Context, r slog.Record) error {
	k := fmt.Sprintf("%s %q", r.Level, r.Message)
	l.mu.Lock()
	l.count[k]++
	n := l.count[k]
	l.mu.Unlock()
	if n > l.show {
		return nil
	}
	if n == l.show {
		r.AddAttrs(slog.String("note", "more like this are only counted, in the summary"))
	}
	return l.h.Handle(ctx, r)
}

func (l *logTally) WithAttrs(as []slog.Attr) slog.Handler {
	c := *l
	c.h = l.h.WithAttrs(as)
	return &c
}

func (l *logTally) WithGroup(name string) slog.Handler {
	c := *l
	c.h = l.h.WithGroup(name)
	return &c
}

// counts returns a copy of the tally.
func (l *logTally) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.count)
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
