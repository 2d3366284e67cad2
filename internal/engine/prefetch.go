package engine

import (
	"log/slog"
	"sync"

	"github.com/IBM/sarama"
)

// A session's claims start together, many of them at once on a worker
// with many partitions and retry tiers. What each would ask the brokers
// for on its own (its committed offset and done-set, and, with none
// committed, its oldest and newest offsets) is asked for all of them in a
// few requests when the session is set up, and each claim takes its own
// answer from here; a claim with none asks for itself.
type prefetched struct {
	mu        sync.Mutex
	committed map[topicPartition]*sarama.OffsetFetchResponseBlock
	bounds    map[topicPartition][2]int64 // oldest, newest
}

// prefetch reads the committed offsets of every claim of sess in one
// request, and the oldest and newest offsets of those with none in one
// request per leader. Failures only leave the claims to ask for
// themselves.
func (g *Consumer) prefetch(sess sarama.ConsumerGroupSession) {
	committed := map[topicPartition]*sarama.OffsetFetchResponseBlock{}
	bounds := map[topicPartition][2]int64{}
	defer func() {
		g.pre.mu.Lock()
		g.pre.committed, g.pre.bounds = committed, bounds
		g.pre.mu.Unlock()
	}()
	claims := sess.Claims()
	resp, err := g.Admin.ListConsumerGroupOffsets(g.Group, claims)
	if err != nil {
		g.log.Debug("reading the session's committed offsets at once failed; each claim reads its own", slog.Any("error", err))
		return
	}
	var none []topicPartition
	for topic, ids := range claims {
		for _, id := range ids {
			tp := topicPartition{topic, id}
			if b := resp.GetBlock(topic, id); b != nil && b.Err == sarama.ErrNoError {
				committed[tp] = b
				if b.Offset < 0 {
					none = append(none, tp)
				}
			}
		}
	}
	byLeader := map[*sarama.Broker][]topicPartition{}
	for _, tp := range none {
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
				bounds[tp] = [2]int64{o, n}
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
// (OffsetNewest) offset of a claim with no committed offset, or asks.
func (g *Consumer) offsetOf(topic string, id int32, which int64) (int64, error) {
	g.pre.mu.Lock()
	b, ok := g.pre.bounds[topicPartition{topic, id}]
	g.pre.mu.Unlock()
	switch {
	case ok && which == sarama.OffsetOldest:
		return b[0], nil
	case ok && which == sarama.OffsetNewest:
		return b[1], nil
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
