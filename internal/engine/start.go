package engine

import (
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/attr"
)

// startFlushTimeout bounds how long a new claim waits for its start offset
// to be committed before it starts handling anyway (the periodic commits
// keep trying).
const startFlushTimeout = 10 * time.Second

// startClaim gives a claim that has no committed offset a concrete start
// and commits it at once, as the Java consumer commits its position, so
// that a restart or the next owner continues from there instead of
// resolving "oldest" or "newest" again: with newest that would skip what
// was produced, retried or left unfinished in between.
//
// A source topic starts where KAFKA_INITIAL_OFFSET says; a retry tier
// always starts at its oldest offset, since everything in it is owed work.
// Records below the resolved start (produced in the instant between
// sarama's resolution and this one) are before the group's start and are
// not handled.
//
// It reports whether the session must restart: a retry tier that holds
// records while sarama started its claim at the newest offset would skip
// them, and a claim cannot seek; once the oldest offset is committed, a new
// session's claim starts from it.
func (g *Consumer) startClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, p *partition) (restart bool) {
	if claim.InitialOffset() >= 0 {
		return false // the group has a committed offset
	}
	saramaStart := g.InitialOffset
	want := saramaStart
	if p.hop.Tier > 0 {
		want = sarama.OffsetOldest
	}
	start, err := g.offsetOf(p.topic, p.id, want)
	if err == nil && want != saramaStart {
		var end int64
		if end, err = g.offsetOf(p.topic, p.id, saramaStart); err == nil {
			restart = start < end
		}
	}
	if err != nil {
		g.log.Error("cannot resolve the start offset of a partition with no committed offset; it is committed once a message is handled",
			attr.Topic(p.topic), attr.Partition(p.id), slog.Any("error", err))
		return false
	}
	p.state.Start(start)
	err = g.Committer.Flush(p.state, time.Now().Add(g.Deadlines.StartFlush()), sess.Context().Done())
	if err != nil {
		g.log.Warn("could not commit the start offset of a partition with no committed offset yet; retrying with the periodic commits",
			attr.Topic(p.topic), attr.Partition(p.id), slog.Int64("start", start), slog.Any("error", err))
		return false
	}
	g.log.Info("no committed offset: committed the start offset", attr.Topic(p.topic), attr.Partition(p.id),
		slog.Int64("start", start), slog.String("from", offsetName(want)))
	if restart {
		g.log.Warn("a retry tier holds records but had no committed offset, and its claim started at the newest offset: "+
			"restarting the session so that they are handled from its oldest offset",
			attr.Topic(p.topic), attr.Partition(p.id), slog.Int64("oldest", start))
	}
	return restart
}

func offsetName(o int64) string {
	if o == sarama.OffsetNewest {
		return "newest"
	}
	return "oldest"
}
