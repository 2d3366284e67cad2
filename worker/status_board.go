package worker

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// maxFailures is how many failed deliveries the status page lists.
const maxFailures = 20

// maxErrorText is how many characters of an error's text it shows.
const maxErrorText = 200

// rateWindow is how far back the throughput chart goes, one point a second.
const rateWindow = 5 * time.Minute

// statusBoard holds what the status page shows beyond the Config and the
// health flags. Nothing here is touched per successful message: partitions
// are sampled at their dispatcher's lag tick, failures recorded on the
// failure branch of a delivery, and delivery totals summed from the
// per-partition counters when the status is read, as a scrape would.
type statusBoard struct {
	started time.Time

	mu         sync.Mutex
	parts      map[partKey]PartitionStatus
	member     string
	generation int32
	failures   [maxFailures]FailureStatus // a ring; next is the slot written next
	next       int
	nFailures  int

	rateMu   sync.Mutex
	rates    []ratePoint // oldest first, one a second at most, over rateWindow
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

func newStatusBoard() *statusBoard {
	return &statusBoard{started: time.Now(), parts: map[partKey]PartitionStatus{}}
}

// putPartition stores a partition's sample and the session it was taken in.
func (b *statusBoard) putPartition(s PartitionStatus, member string, generation int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.parts[partKey{s.Topic, s.Partition}] = s
	if generation >= b.generation {
		b.member, b.generation = member, generation
	}
}

// dropPartition forgets a released partition.
func (b *statusBoard) dropPartition(topic string, partition int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.parts, partKey{topic, partition})
}

// partitions returns the samples sorted by topic and partition, and the
// latest session's member id and generation.
func (b *statusBoard) partitions() ([]PartitionStatus, string, int32) {
	b.mu.Lock()
	out := make([]PartitionStatus, 0, len(b.parts))
	for _, s := range b.parts {
		out = append(out, s)
	}
	member, gen := b.member, b.generation
	b.mu.Unlock()
	slices.SortFunc(out, func(a, c PartitionStatus) int {
		if n := strings.Compare(a.Topic, c.Topic); n != 0 {
			return n
		}
		return int(a.Partition - c.Partition)
	})
	return out, member, gen
}

// addFailure records a failed delivery in the ring.
func (b *statusBoard) addFailure(f FailureStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures[b.next] = f
	b.next = (b.next + 1) % maxFailures
	b.nFailures = min(b.nFailures+1, maxFailures)
}

// recentFailures returns the ring's failures, newest first.
func (b *statusBoard) recentFailures() []FailureStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]FailureStatus, 0, b.nFailures)
	for i := 1; i <= b.nFailures; i++ {
		out = append(out, b.failures[(b.next-i+maxFailures)%maxFailures])
	}
	return out
}

// failureOf describes a failed delivery of t for the status page; dest is
// where it goes next, nil for a retry in place.
func failureOf(p *partition, t *task, err error, dest *destination, at time.Time) FailureStatus {
	f := FailureStatus{
		Time: at.UTC(), Topic: p.topic, Partition: p.id, Offset: t.msg.Offset, Attempt: t.base + t.attempt,
		ErrorType: handler.ErrorType(err), Error: truncateText(err.Error(), maxErrorText),
		Destination: DestinationInPlace,
	}
	switch {
	case dest == nil:
	case dest.deadLetter:
		f.Destination, f.DestinationTopic = DestinationDeadLetter, dest.topic
	default:
		f.Destination, f.DestinationTopic, f.Tier = DestinationRetryTier, dest.topic, p.hop.tier+1
	}
	return f
}

// truncateText returns s's first n characters (runes), with an ellipsis
// when it had more, and never a broken UTF-8 sequence.
func truncateText(s string, n int) string {
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

// noteRate appends totals to the rate history when a second has passed
// since the last point; total is called only then. Safe from any goroutine;
// callers that lose the race for the second skip without waiting.
func (b *statusBoard) noteRate(now time.Time, total func() [metricdef.NumResults]uint64) {
	due := b.rateNext.Load()
	if now.UnixNano() < due || !b.rateNext.CompareAndSwap(due, now.Add(time.Second).UnixNano()) {
		return
	}
	counts := total()
	b.rateMu.Lock()
	defer b.rateMu.Unlock()
	b.rates = append(b.rates, ratePoint{at: now, counts: counts})
	cut := 0
	for cut < len(b.rates)-1 && now.Sub(b.rates[cut].at) > rateWindow {
		cut++
	}
	b.rates = slices.Delete(b.rates, 0, cut)
}

// rateSeries turns the history into per-second rates, oldest first.
func (b *statusBoard) rateSeries() []RatePoint {
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

// countsOf turns per-result totals into DeliveryCounts.
func countsOf(c [metricdef.NumResults]uint64) DeliveryCounts {
	d := DeliveryCounts{Success: c[metricdef.Success], Error: c[metricdef.Error], Retry: c[metricdef.Retry], DeadLetter: c[metricdef.DeadLetter]}
	d.Handled = d.Success + d.Error + d.Retry + d.DeadLetter
	return d
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
