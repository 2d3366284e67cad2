package engine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/attr"
)

// TierCheckEvery is how often the TierWatch asks the brokers whether an
// idle retry-tier partition received records: the longest a record that
// another worker forwarded waits before its partition is fetched again.
// Records this worker forwards wake their partition at once (Forwarded).
const TierCheckEvery = time.Second

// tierCheckSoon is how soon after a partition goes idle the watch checks
// it once: a partition found empty before its first fetch answered (its
// high watermark not known yet) is fetched again within this if it has
// records after all.
const tierCheckSoon = 20 * time.Millisecond

// TierWatch keeps retry-tier partitions that hold nothing to handle from
// being fetched. Their dispatchers pause them (Idle) and wait on the
// channel it returns; the watch closes it when a record lands there: at
// once when this worker forwarded it (Forwarded), otherwise when its
// periodic check (one ListOffsets request per broker for every idle
// partition, every TierCheckEvery) finds the end offset past where the
// dispatcher stopped. With many partitions and mostly empty tiers (the
// usual case) the tiers then cost a request a second instead of a place
// in every fetch, on the consumer and on the broker.
type TierWatch struct {
	client sarama.Client
	log    *slog.Logger
	every  time.Duration
	kick   chan struct{} // a partition went idle: check soon

	mu        sync.Mutex // guards idle and onForward
	idle      map[topicPartition]*idleTier
	onForward func() // told of every record this worker forwards to a tier (SetOnForward)
}

type topicPartition struct {
	topic     string
	partition int32
}

// idleTier is a paused tier partition: where its dispatcher stopped
// reading, and the channel closed to wake it, with until set before: the
// end offset the watch saw, or where the record forwarded here went (its
// offset plus one), which the dispatcher reads to before it may go idle
// again.
type idleTier struct {
	next  int64
	until int64
	wake  chan struct{}
}

// NewTierWatch makes a watch over client's partitions; Run runs its checks.
func NewTierWatch(client sarama.Client, log *slog.Logger) *TierWatch {
	return &TierWatch{client: client, log: log, every: TierCheckEvery, kick: make(chan struct{}, 1),
		idle: map[topicPartition]*idleTier{}}
}

// Idle registers a tier partition whose dispatcher paused it, having read
// everything below next; the channel closes when records at or past next
// may be there.
func (w *TierWatch) Idle(topic string, partition int32, next int64) *idleTier {
	it := &idleTier{next: next, until: next + 1, wake: make(chan struct{})}
	w.mu.Lock()
	if old := w.idle[topicPartition{topic, partition}]; old != nil {
		close(old.wake)
	}
	w.idle[topicPartition{topic, partition}] = it
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return it
}

// Forget drops a partition from the watch: its dispatcher resumed it, or
// is done with it.
func (w *TierWatch) Forget(topic string, partition int32) {
	w.mu.Lock()
	delete(w.idle, topicPartition{topic, partition})
	w.mu.Unlock()
}

// Forwarded wakes the partition a record was just published to (at
// offset), if it is idle here.
func (w *TierWatch) Forwarded(topic string, partition int32, offset int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wakeLocked(topicPartition{topic, partition}, offset+1)
	if w.onForward != nil {
		w.onForward()
	}
}

// SetOnForward makes f be called on every record this worker forwards to
// a retry tier (under the watch's lock: f must not block).
func (w *TierWatch) SetOnForward(f func()) {
	w.mu.Lock()
	w.onForward = f
	w.mu.Unlock()
}

// IdleCount is how many tier partitions are paused for want of records.
func (w *TierWatch) IdleCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}

// wakeLocked wakes tp's dispatcher, to read to until; called with w.mu
// held.
func (w *TierWatch) wakeLocked(tp topicPartition, until int64) {
	if it := w.idle[tp]; it != nil {
		it.until = max(until, it.next+1)
		close(it.wake)
		delete(w.idle, tp)
	}
}

// Run checks the idle partitions every TierCheckEvery, and soon after one
// goes idle, until ctx is done.
func (w *TierWatch) Run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
			select { // let the partitions going idle together gather
			case <-ctx.Done():
				return
			case <-time.After(tierCheckSoon):
			}
		}
		w.check()
	}
}

// check asks each partition's leader for its end offset and wakes those
// past where their dispatcher stopped. A partition whose end offset
// cannot be read is woken too: its fetching finds out.
func (w *TierWatch) check() {
	w.mu.Lock()
	byLeader := map[*sarama.Broker][]topicPartition{}
	var unknown []topicPartition
	for tp := range w.idle {
		b, err := w.client.Leader(tp.topic, tp.partition)
		if err != nil {
			unknown = append(unknown, tp)
			continue
		}
		byLeader[b] = append(byLeader[b], tp)
	}
	for _, tp := range unknown {
		w.wakeLocked(tp, 0)
	}
	w.mu.Unlock()
	for b, tps := range byLeader {
		ends, err := listOffsets(w.client.Config().Version, b, tps, sarama.OffsetNewest)
		w.mu.Lock()
		for _, tp := range tps {
			it := w.idle[tp]
			if it == nil {
				continue
			}
			if end, ok := ends[tp]; err != nil || !ok || end > it.next {
				w.wakeLocked(tp, end)
			}
		}
		w.mu.Unlock()
		if err != nil {
			w.log.Debug("reading the end offsets of idle retry-tier partitions failed; fetching them again", attr.Topic(tps[0].topic), slog.Any("error", err))
		}
	}
}
