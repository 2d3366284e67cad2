package telemetry

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/internal/metricdef"
)

// Stats are one claimed partition's per-message metrics: plain numbers
// behind a lock of their own. The partition records deliveries into a
// Delta under its own lock, which it holds then anyway, and adds the
// Delta here in one go (Add): after a batch of deliveries, on a failure,
// when it has nothing left in flight, every second, and before it is
// released.
// No atomic shared between partitions or goroutines sits on the hot path.
// The collector adds them up when Prometheus scrapes, taking this lock and
// no partition's.
type Stats struct {
	group, topic string
	mu           sync.Mutex
	consumed     uint64
	processed    [metricdef.NumResults]uint64
	duration     [metricdef.NumResults]localHist
	delay        localHist
}

func newStats(group, topic string) *Stats {
	return &Stats{group: group, topic: topic}
}

// AddConsumed counts n messages taken from Kafka.
func (s *Stats) AddConsumed(n int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.consumed += uint64(n)
	s.mu.Unlock()
}

// Record counts one delivery with outcome r that took took; delay, when
// hasDelay, is the message's processing delay.
func (s *Stats) Record(r metricdef.Result, took, delay time.Duration, hasDelay bool) {
	var d Delta
	d.Record(r, took, delay, hasDelay)
	s.Add(&d)
}

// Add adds d to s and empties d. s may be nil (no metrics): d is emptied.
func (s *Stats) Add(d *Delta) {
	if d.n == 0 && d.consumed == 0 {
		return
	}
	if s != nil {
		s.mu.Lock()
		s.consumed += d.consumed
		for r := range d.processed {
			s.processed[r] += d.processed[r]
			s.duration[r].merge(&d.duration[r])
		}
		s.delay.merge(&d.delay)
		s.mu.Unlock()
	}
	*d = Delta{}
}

// Delta is deliveries recorded but not yet added to a Stats. It is not
// safe for concurrent use: its owner (a partition) guards it with its own
// lock.
type Delta struct {
	consumed  uint64
	processed [metricdef.NumResults]uint64
	duration  [metricdef.NumResults]localHist
	delay     localHist
	n         int
}

// Record counts one delivery, as Stats.Record does.
func (d *Delta) Record(r metricdef.Result, took, delay time.Duration, hasDelay bool) {
	d.processed[r]++
	d.duration[r].observe(took)
	if hasDelay {
		d.delay.observe(delay)
	}
	d.n++
}

// AddConsumed counts n messages taken from Kafka, as Stats.AddConsumed
// does.
func (d *Delta) AddConsumed(n int) { d.consumed += uint64(n) }

// Len is how many deliveries d holds.
func (d *Delta) Len() int { return d.n }

// localHist is a histogram over durationBuckets, not safe for concurrent
// use. It counts in whole nanoseconds (no float work per observation); the
// collector converts to seconds when Prometheus scrapes.
type localHist struct {
	counts [numBuckets + 1]uint64 // per bucket, the last for +Inf
	count  uint64
	sumNs  int64
}

// durationBounds are durationBuckets as durations.
var durationBounds = func() (b [numBuckets]time.Duration) {
	for i, s := range durationBuckets {
		b[i] = time.Duration(s * float64(time.Second))
	}
	return b
}()

func (h *localHist) observe(d time.Duration) {
	i := 0
	for i < numBuckets && d > durationBounds[i] { // most land in the first few buckets
		i++
	}
	h.counts[i]++
	h.count++
	h.sumNs += int64(d)
}

// merge adds src's observations to h.
func (h *localHist) merge(src *localHist) {
	if src.count == 0 {
		return
	}
	for i := range h.counts {
		h.counts[i] += src.counts[i]
	}
	h.count += src.count
	h.sumNs += src.sumNs
}

// sum is the observations' total in seconds.
func (h *localHist) sum() float64 { return time.Duration(h.sumNs).Seconds() }

// histTotal is a histogram's running total.
type histTotal struct {
	count   uint64
	sum     float64
	buckets []uint64 // cumulative, one per durationBuckets bound
}

func (h *histTotal) add(src *localHist) {
	if h.buckets == nil {
		h.buckets = make([]uint64, len(durationBuckets))
	}
	h.count += src.count
	h.sum += src.sum()
	var cum uint64
	for i := range durationBuckets {
		cum += src.counts[i]
		h.buckets[i] += cum
	}
}

// topicTotals are the summed metrics of one group and topic.
type topicTotals struct {
	consumed  uint64
	processed [metricdef.NumResults]uint64
	duration  [metricdef.NumResults]histTotal
	delay     histTotal
}

func (t *topicTotals) add(s *Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.consumed += s.consumed
	for r := range s.processed {
		t.processed[r] += s.processed[r]
		t.duration[r].add(&s.duration[r])
	}
	t.delay.add(&s.delay)
}

type topicKey struct{ group, topic string }

// deliveryCollector exports the consumed, processed, duration and delay
// metrics from every partition's Stats: the live ones, plus the
// totals of partitions already released, so every counter only grows.
// Workers sharing a registry share one collector.
type deliveryCollector struct {
	consumed, processed, duration, delay *prometheus.Desc

	mu      sync.Mutex
	live    map[*Stats]struct{}
	retired map[topicKey]*topicTotals
}

func newDeliveryCollector() *deliveryCollector {
	return &deliveryCollector{
		consumed:  metricdef.Desc(metricdef.MessagesConsumed), // from the metric table (metrics.go)
		processed: metricdef.Desc(metricdef.MessagesProcessed),
		duration:  metricdef.Desc(metricdef.ProcessingDuration),
		delay:     metricdef.Desc(metricdef.ProcessingDelay),
		live:      map[*Stats]struct{}{},
		retired:   map[topicKey]*topicTotals{},
	}
}

// track adds a partition's stats; retire folds them into the totals when
// the partition is released.
func (c *deliveryCollector) track(s *Stats) {
	c.mu.Lock()
	c.live[s] = struct{}{}
	c.mu.Unlock()
}

func (c *deliveryCollector) retire(s *Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, s)
	k := topicKey{s.group, s.topic}
	if c.retired[k] == nil {
		c.retired[k] = &topicTotals{}
	}
	c.retired[k].add(s)
}

func (c *deliveryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.consumed
	ch <- c.processed
	ch <- c.duration
	ch <- c.delay
}

func (c *deliveryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	totals := map[topicKey]*topicTotals{}
	for k, t := range c.retired {
		cp := *t
		for r := range cp.duration {
			cp.duration[r].buckets = append([]uint64(nil), t.duration[r].buckets...)
		}
		cp.delay.buckets = append([]uint64(nil), t.delay.buckets...)
		totals[k] = &cp
	}
	for s := range c.live {
		k := topicKey{s.group, s.topic}
		if totals[k] == nil {
			totals[k] = &topicTotals{}
		}
		totals[k].add(s)
	}
	c.mu.Unlock()

	for k, t := range totals {
		ch <- prometheus.MustNewConstMetric(c.consumed, prometheus.CounterValue, float64(t.consumed), k.group, k.topic)
		for r := range metricdef.NumResults {
			label := metricdef.Result(r).Label()
			ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(t.processed[r]), k.group, k.topic, label)
			ch <- constHistogram(c.duration, t.duration[r], k.group, k.topic, label)
		}
		ch <- constHistogram(c.delay, t.delay, k.group, k.topic)
	}
}

func constHistogram(desc *prometheus.Desc, h histTotal, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(durationBuckets))
	for i, bound := range durationBuckets {
		if h.buckets != nil {
			buckets[bound] = h.buckets[i]
		} else {
			buckets[bound] = 0
		}
	}
	return prometheus.MustNewConstHistogram(desc, h.count, h.sum, buckets, labels...)
}

// Processed is how many deliveries ended with outcome r.
func (s *Stats) Processed(r metricdef.Result) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.processed[r]
}
