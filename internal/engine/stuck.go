package engine

import (
	"log/slog"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/commit"
)

// watchHeld runs on the dispatcher's tick: it sets the partition's
// oldest-in-flight-age gauge, logs each message that has been held longer
// than WORKER_STUCK_AFTER (once per message; never the payload, the key only
// at Debug), notes when intake stopped and why, and sweeps idle keys.
func (p *partition) watchHeld() {
	now := p.clock.read()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepKeys()
	var age time.Duration
	if oldest, ok := p.state.Oldest(); ok {
		age = now - oldest.takenAt
	}
	p.all.SetOldestAge(p.topic, p.id, age)
	if p.stuckAfter <= 0 || age < p.stuckAfter {
		return
	}
	snap := p.state.Snapshot()
	p.state.EachUnfinished(func(t *task) bool {
		held := now - t.takenAt
		if held < p.stuckAfter {
			return false // taken in order: the rest are younger
		}
		_, backingOff := p.backingOff[t]
		if !t.stuck && (backingOff || t.attemptShown.Load() > 0) { // running or waiting in place, not queued behind its key
			t.stuck = true
			p.reportStuck(t, held, snap)
		}
		return true
	})
}

// reportStuck logs t as stuck; snap is the commit state's numbers. Called
// with p.mu held.
func (p *partition) reportStuck(t *task, held time.Duration, snap commit.Snapshot) {
	behind := 0
	for n := t.next; n != nil; n = n.next {
		behind++
	}
	state := "running"
	if _, ok := p.backingOff[t]; ok {
		state = "waiting to be retried in place or until its due time"
	}
	p.log.Warn("message stuck: held longer than WORKER_STUCK_AFTER; the partition's committed offset cannot pass it",
		p.msgAttrs(t, slog.Int("attempt", t.base+int(t.attemptShown.Load())), slog.Duration("held_for", held.Round(time.Millisecond)),
			slog.String("state", state), slog.Int("same_key_waiting_behind", behind),
			slog.Int("partition_messages_held", snap.Held),
			slog.Int64("committed_offset_held_back_by", max(snap.LastAdmitted-t.msg.Offset, 0)))...)
	p.log.Debug("stuck message key", p.msgAttrs(t, slog.String("key", string(t.msg.Key)))...)
}

// reportUnstuck logs that a message reported stuck finished. Called with
// p.mu held.
func (p *partition) reportUnstuck(t *task) {
	p.log.Info("stuck message finished",
		p.msgAttrs(t, slog.Int("attempt", t.base+int(t.attemptShown.Load())),
			slog.Duration("held_for", (p.clock.read()-t.takenAt).Round(time.Millisecond)))...)
}

// intakeReason says why intake stopped: "done_set" when the done-set
// neared the metadata limit, else "in_flight".
func (p *partition) intakeReason() string {
	if p.state.Snapshot().DoneSetFull {
		return "done_set"
	}
	return "in_flight"
}

// noteIntake counts that intake stopped for reason, once per episode and
// reason; the dispatcher calls it when it starts holding back and when the
// reason it holds back for changes.
func (p *partition) noteIntake(reason string) {
	snap := p.state.Snapshot()
	held, ranges := snap.Held, snap.Ranges
	p.all.NoteIntakeBlocked(p.topic, reason)
	level := slog.LevelDebug
	if reason == "done_set" {
		level = slog.LevelWarn // rare and worth knowing: a pathological completion pattern
	}
	p.log.Log(p.ctx, level, "partition intake paused until its oldest message finishes",
		attr.Topic(p.topic), attr.Partition(p.id), slog.String("reason", reason),
		slog.Int("messages_held", held), slog.Int("done_ranges", ranges))
}
