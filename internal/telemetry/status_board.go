package telemetry

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// maxFailures is how many failed deliveries the status page lists.
const maxFailures = 20

// maxErrorText is how many characters of an error's text it shows.
const maxErrorText = 200

// RateWindow is how far back the throughput chart goes, one point a second.
const RateWindow = 5 * time.Minute

// Board holds what the status page shows beyond the Config and the
// health flags. Nothing here is touched per successful message: partitions
// are sampled at their dispatcher's lag tick, failures recorded on the
// failure branch of a delivery, and delivery totals summed from the
// per-partition counters when the status is read, as a scrape would.
type Board struct {
	started time.Time

	mu         sync.Mutex
	parts      map[partKey]PartitionSample
	member     string
	generation int32
	failures   [maxFailures]Failure // a ring; next is the slot written next
	next       int
	nFailures  int

	rateMu   sync.Mutex
	rates    []ratePoint // oldest first, one a second at most, over RateWindow
	rateNext atomic.Int64
}

type partKey struct {
	topic     string
	partition int32
}

// ratePoint is a cumulative total at an instant, from which the chart's
// rates are differences.
type ratePoint struct {
	at     time.Time
	counts [metricdef.NumResults]uint64
}

func newBoard() *Board {
	return &Board{started: time.Now(), parts: map[partKey]PartitionSample{}}
}

// PutPartition stores a partition's sample and the session it was taken in.
func (b *Board) PutPartition(s PartitionSample, member string, generation int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.parts[partKey{s.Topic, s.Partition}] = s
	if generation >= b.generation {
		b.member, b.generation = member, generation
	}
}

// dropPartition forgets a released partition.
func (b *Board) dropPartition(topic string, partition int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.parts, partKey{topic, partition})
}

// Partitions returns the samples sorted by topic and partition, and the
// latest session's member id and generation.
func (b *Board) Partitions() ([]PartitionSample, string, int32) {
	b.mu.Lock()
	out := make([]PartitionSample, 0, len(b.parts))
	for _, s := range b.parts {
		out = append(out, s)
	}
	member, gen := b.member, b.generation
	b.mu.Unlock()
	slices.SortFunc(out, func(a, c PartitionSample) int {
		if n := strings.Compare(a.Topic, c.Topic); n != 0 {
			return n
		}
		return int(a.Partition - c.Partition)
	})
	return out, member, gen
}

// AddFailure records a failed delivery in the ring.
func (b *Board) AddFailure(f Failure) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures[b.next] = f
	b.next = (b.next + 1) % maxFailures
	b.nFailures = min(b.nFailures+1, maxFailures)
}

// RecentFailures returns the ring's failures, newest first.
func (b *Board) RecentFailures() []Failure {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Failure, 0, b.nFailures)
	for i := 1; i <= b.nFailures; i++ {
		out = append(out, b.failures[(b.next-i+maxFailures)%maxFailures])
	}
	return out
}

// TruncateText returns s's first n characters (runes), with an ellipsis
// when it had more, and never a broken UTF-8 sequence.
func TruncateText(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	i := 0
	for range n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return strings.ToValidUTF8(s[:i], "\uFFFD") + "…"
}

// NoteRate appends totals to the rate history when a second has passed
// since the last point; total is called only then. Safe from any goroutine;
// callers that lose the race for the second skip without waiting.
func (b *Board) NoteRate(now time.Time, total func() [metricdef.NumResults]uint64) {
	due := b.rateNext.Load()
	if now.UnixNano() < due || !b.rateNext.CompareAndSwap(due, now.Add(time.Second).UnixNano()) {
		return
	}
	counts := total()
	b.rateMu.Lock()
	defer b.rateMu.Unlock()
	b.rates = append(b.rates, ratePoint{at: now, counts: counts})
	cut := 0
	for cut < len(b.rates)-1 && now.Sub(b.rates[cut].at) > RateWindow {
		cut++
	}
	b.rates = slices.Delete(b.rates, 0, cut)
}

// RateSeries turns the history into per-second rates, oldest first.
func (b *Board) RateSeries() []RatePoint {
	b.rateMu.Lock()
	defer b.rateMu.Unlock()
	out := make([]RatePoint, 0, len(b.rates))
	for i := 1; i < len(b.rates); i++ {
		prev, cur := b.rates[i-1], b.rates[i]
		secs := cur.at.Sub(prev.at).Seconds()
		if secs <= 0 {
			continue
		}
		rate := func(r metricdef.Result) float64 { return float64(cur.counts[r]-prev.counts[r]) / secs }
		pt := RatePoint{Time: cur.at.UTC(), Success: rate(metricdef.Success), Error: rate(metricdef.Error),
			Retry: rate(metricdef.Retry), DeadLetter: rate(metricdef.DeadLetter)}
		pt.Handled = pt.Success + pt.Error + pt.Retry + pt.DeadLetter
		out = append(out, pt)
	}
	return out
}

// groupTotals sums the consumed and processed counters of group's
// partitions, live and released, as Collect does for a scrape: it takes
// each live partition's lock briefly.
func (c *deliveryCollector) groupTotals(group string) (consumed uint64, processed [metricdef.NumResults]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t topicTotals
	for k, r := range c.retired {
		if k.group == group {
			t.consumed += r.consumed
			for i := range r.processed {
				t.processed[i] += r.processed[i]
			}
		}
	}
	for s := range c.live {
		if s.group == group {
			s.mu.Lock()
			t.consumed += s.consumed
			for i := range s.processed {
				t.processed[i] += s.processed[i]
			}
			s.mu.Unlock()
		}
	}
	return t.consumed, t.processed
}

// Started is when the board was made: when the worker was created.
func (b *Board) Started() time.Time { return b.started }
