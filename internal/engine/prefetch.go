package engine

import (
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// A session's claims start together, many of them at once on a worker
// with many partitions and retry tiers. What each would ask the brokers
// for on its own (its committed offset and done-set, and the oldest and
// newest offsets sarama and startClaim resolve its start from) is asked
// for all of them in a few requests when the session is set up, and each
// claim takes its own answer from here; a claim with none asks for itself.
type prefetched struct {
	mu        sync.Mutex
	committed map[topicPartition]*sarama.OffsetFetchResponseBlock
}

// StartOffsets is the group's client as sarama's consumer sees it (the
// worker makes its consumer group from it): every call goes to the
// client, except that GetOffset answers from the oldest and newest offsets
// the session's set-up read for all its claims at once (Consumer.prefetch)
// instead of asking the partition's leader. sarama asks for both when it
// starts a claim (its range check and first high watermark, or its start
// when the group has no committed offset), two requests per claim, 2,048
// for a worker with 256 partitions and three retry tiers.
//
// Each answer is given once per claim (a claim that sarama starts again,
// after a retriable error, asks the broker) and only for startOffsetsFresh
// after it was read. The answers are read in Setup, after sarama read the
// claims' committed offsets, so a committed offset is never above the
// newest offset given for its claim: the committed offset came from a
// consumer that read up to it, before the newest offset was read.
type StartOffsets struct {
	sarama.Client

	mu     sync.Mutex // guards the fields below
	readAt time.Time
	bounds map[topicPartition]*claimBounds
}

// claimBounds are one claim's oldest and newest offsets, and whether
// sarama was given each.
type claimBounds struct {
	oldest, newest         int64
	gaveOldest, gaveNewest bool
}

// startOffsetsFresh is how long after the set-up read them the start
// offsets are given to sarama. The claims of a session start at once;
// one that starts later (waiting for its leader) asks the broker.
const startOffsetsFresh = 10 * time.Second

// NewStartOffsets wraps client; make the consumer group from the result
// and pass it as Params.StartOffsets.
func NewStartOffsets(client sarama.Client) *StartOffsets {
	return &StartOffsets{Client: client}
}

// GetOffset is sarama.Client's, answering a claim's oldest or newest
// offset from the session's set-up once.
func (s *StartOffsets) GetOffset(topic string, id int32, which int64) (int64, error) {
	if which == sarama.OffsetOldest || which == sarama.OffsetNewest {
		s.mu.Lock()
		b := s.bounds[topicPartition{topic, id}]
		if b != nil && time.Since(s.readAt) < startOffsetsFresh {
			switch {
			case which == sarama.OffsetOldest && !b.gaveOldest:
				b.gaveOldest = true
				s.mu.Unlock()
				return b.oldest, nil
			case which == sarama.OffsetNewest && !b.gaveNewest:
				b.gaveNewest = true
				s.mu.Unlock()
				return b.newest, nil
			}
		}
		s.mu.Unlock()
	}
	return s.Client.GetOffset(topic, id, which)
}

// set replaces the offsets with those of a new session's claims.
func (s *StartOffsets) set(bounds map[topicPartition]*claimBounds, at time.Time) {
	s.mu.Lock()
	s.bounds, s.readAt = bounds, at
	s.mu.Unlock()
}

// get returns a claim's oldest (OffsetOldest) or newest (OffsetNewest)
// offset as the set-up read it, if it did and that is fresh.
func (s *StartOffsets) get(topic string, id int32, which int64) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bounds[topicPartition{topic, id}]
	if b == nil || time.Since(s.readAt) >= startOffsetsFresh {
		return 0, false
	}
	if which == sarama.OffsetOldest {
		return b.oldest, true
	}
	return b.newest, true
}

// prefetch reads the committed offsets of every claim of sess in one
// request, and the oldest and newest offsets in one request each per
// leader: of every claim when sarama starts its claims through
// StartOffsets, else of those with no committed offset (startClaim
// resolves their start). Failures only leave the claims to ask for
// themselves.
func (g *Consumer) prefetch(sess sarama.ConsumerGroupSession) {
	committed := map[topicPartition]*sarama.OffsetFetchResponseBlock{}
	bounds := map[topicPartition]*claimBounds{}
	at := time.Now()
	defer func() {
		g.pre.mu.Lock()
		g.pre.committed = committed
		g.pre.mu.Unlock()
		g.offsets.set(bounds, at)
	}()
	claims := sess.Claims()
	resp, err := g.Admin.ListConsumerGroupOffsets(g.Group, claims)
	if err != nil {
		g.log.Debug("reading the session's committed offsets at once failed; each claim reads its own", slog.Any("error", err))
		return
	}
	var want []topicPartition
	for topic, ids := range claims {
		for _, id := range ids {
			tp := topicPartition{topic, id}
			if b := resp.GetBlock(topic, id); b != nil && b.Err == sarama.ErrNoError {
				committed[tp] = b
				if b.Offset < 0 || g.StartOffsets != nil {
					want = append(want, tp)
				}
			} else if g.StartOffsets != nil {
				want = append(want, tp)
			}
		}
	}
	byLeader := map[*sarama.Broker][]topicPartition{}
	for _, tp := range want {
		if b, err := g.Client.Leader(tp.topic, tp.partition); err == nil {
			byLeader[b] = append(byLeader[b], tp)
		}
	}
	version := g.Client.Config().Version
	for b, tps := range byLeader {
		oldest, err1 := listOffsets(version, b, tps, sarama.OffsetOldest)
		newest, err2 := listOffsets(version, b, tps, sarama.OffsetNewest)
		if err1 != nil || err2 != nil {
			continue
		}
		for _, tp := range tps {
			o, ok1 := oldest[tp]
			n, ok2 := newest[tp]
			if ok1 && ok2 {
				bounds[tp] = &claimBounds{oldest: o, newest: n}
			}
		}
	}
}

// committedOf takes the prefetched committed offset of a claim, if any.
func (g *Consumer) committedOf(topic string, id int32) *sarama.OffsetFetchResponseBlock {
	g.pre.mu.Lock()
	defer g.pre.mu.Unlock()
	tp := topicPartition{topic, id}
	b := g.pre.committed[tp]
	delete(g.pre.committed, tp)
	return b
}

// offsetOf returns the prefetched oldest (OffsetOldest) or newest
// (OffsetNewest) offset of a claim, or asks.
func (g *Consumer) offsetOf(topic string, id int32, which int64) (int64, error) {
	if o, ok := g.offsets.get(topic, id, which); ok {
		return o, nil
	}
	return g.Client.GetOffset(topic, id, which)
}

// listOffsets reads the oldest or newest offsets of tps from their leader
// b in one request.
func listOffsets(version sarama.KafkaVersion, b *sarama.Broker, tps []topicPartition, which int64) (map[topicPartition]int64, error) {
	req := sarama.NewOffsetRequest(version)
	for _, tp := range tps {
		req.AddBlock(tp.topic, tp.partition, which, 1)
	}
	resp, err := b.GetAvailableOffsets(req)
	if err != nil {
		return nil, err
	}
	out := make(map[topicPartition]int64, len(tps))
	for _, tp := range tps {
		blk := resp.GetBlock(tp.topic, tp.partition)
		if blk == nil || blk.Err != sarama.ErrNoError {
			continue
		}
		if blk.Offset > 0 || len(blk.Offsets) == 0 {
			out[tp] = blk.Offset
		} else {
			out[tp] = blk.Offsets[0]
		}
	}
	return out, nil
}
