package engine

import (
	"context"
	"log/slog"
	"testing"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/commit"
	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// partitionBundle drives one partition's bookkeeping directly: admitted
// messages go to a slice instead of a pool.
type partitionBundle struct {
	p      *partition
	pool   *Pool
	offset int64
}

func setupPartition(t *testing.T, budget int, skip doneset.Set) *partitionBundle {
	t.Helper()
	b := &partitionBundle{pool: &Pool{}}
	b.pool.cond.L = &b.pool.mu
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	b.p = &partition{
		topic: "t", ordering: OrderByKey, pool: b.pool, log: log,
		ctx: ctx, cancel: cancel, keys: map[string]*keyState{},
		state:   commit.NewState[*task](commit.StateParams{Topic: "t", Initial: -2, Skip: skip, MaxHeld: budget, Log: log}),
		runExit: make(chan struct{}, 1),
	}
	return b
}

func (b *partitionBundle) admit(key string) bool {
	m := &sarama.ConsumerMessage{Topic: "t", Key: []byte(key), Offset: b.offset}
	n, _ := b.p.admit([]*sarama.ConsumerMessage{m})
	if n == 1 {
		b.offset++
	}
	return n == 1
}

// queued returns the tasks handed to the pool so far and empties it.
func (b *partitionBundle) queued() []*task {
	out := b.pool.items[b.pool.head:]
	b.pool.items, b.pool.head = nil, 0
	return out
}

func (b *partitionBundle) finish(t *task) *task {
	b.p.mu.Lock()
	defer b.p.mu.Unlock()
	next, _ := b.p.complete(t)
	b.p.flushFinished() // as the partition does once idle, at a batch or every second
	return next
}

func TestPartitionMarksOnlyContiguousDoneOffsets(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 10, nil)
	for _, k := range []string{"a", "b", "c"} {
		b.admit(k)
	}
	ts := b.queued()
	if len(ts) != 3 {
		t.Fatalf("3 distinct keys: want 3 tasks started, got %d", len(ts))
	}
	b.finish(ts[2])
	b.finish(ts[1])
	if b.p.state.Snapshot().Marked > 0 {
		t.Fatalf("offsets 1 and 2 done but 0 is not: nothing may be marked past 0, got %d", b.p.state.Snapshot().Marked)
	}
	_, meta, _ := b.p.state.NextCommit()
	if b.p.state.Snapshot().Marked != 0 {
		t.Fatalf("done-set refresh must mark offset 0 (first unfinished), got %d", b.p.state.Snapshot().Marked)
	}
	set, err := doneset.Decode(meta)
	if err != nil || !set.Contains(1) || !set.Contains(2) || set.Contains(0) {
		t.Fatalf("done-set %q (%v) must hold 1 and 2 but not 0", meta, err)
	}
	b.finish(ts[0])
	if b.p.state.Snapshot().Marked != 3 {
		t.Fatalf("all of 0..2 done: want mark 3, got %d", b.p.state.Snapshot().Marked)
	}
}

func TestPartitionKeyFIFOAndBudget(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 3, nil)
	b.admit("a")
	b.admit("a")
	b.admit("b")
	if b.admit("c") {
		t.Fatal("a budget of 3 admitted a 4th message")
	}
	ts := b.queued()
	if len(ts) != 2 || ts[0].msg.Offset != 0 || ts[1].msg.Offset != 2 {
		t.Fatalf("want offsets 0 (a) and 2 (b) started, the second a waiting; got %d tasks", len(ts))
	}
	next := b.finish(ts[0])
	if next == nil || next.msg.Offset != 1 {
		t.Fatalf("finishing a@0 must hand back a@1, got %v", next)
	}
	select {
	case <-b.p.state.Freed():
	default:
		t.Fatal("budget freed but the starved dispatcher was not woken")
	}
	if !b.admit("c") {
		t.Fatal("budget freed by offset 0, yet c was refused")
	}
}

func TestPartitionSkipsWhatThePreviousOwnerFinished(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 10, doneset.Set{{Start: 1, End: 3}})
	for range 4 {
		b.admit("k")
	}
	ts := b.queued()
	if len(ts) != 1 || ts[0].msg.Offset != 0 {
		t.Fatalf("want only offset 0 started, got %d tasks", len(ts))
	}
	next := b.finish(ts[0])
	if next == nil || next.msg.Offset != 3 {
		t.Fatalf("offsets 1 and 2 were done before: after 0 comes 3, got %v", next)
	}
	if b.p.state.Snapshot().Marked != 3 {
		t.Fatalf("want mark 3 (0 done now, 1-2 done before), got %d", b.p.state.Snapshot().Marked)
	}
	if b.p.state.Snapshot().Skipped != 2 {
		t.Fatalf("skipped %d, want 2", b.p.state.Snapshot().Skipped)
	}
}

// A new owner that commits before it has taken in everything the previous
// owner finished must carry that part of the done-set forward, or the commit
// would erase it and a later owner would handle those messages again.
func TestPartitionCarriesThePreviousDoneSetForward(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 10, doneset.Set{{Start: 1, End: 2}, {Start: 5, End: 8}})
	for _, k := range []string{"a", "b", "c"} { // offsets 0, 1 (skipped), 2
		b.admit(k)
	}
	ts := b.queued()
	b.finish(ts[1]) // offset 2 done; 0 still running
	_, meta, _ := b.p.state.NextCommit()
	set, err := doneset.Decode(meta)
	if err != nil {
		t.Fatal(err)
	}
	for o, want := range map[int64]bool{0: false, 1: true, 2: true, 3: false, 4: false, 5: true, 7: true, 8: false} {
		if set.Contains(o) != want {
			t.Errorf("done-set %v: contains(%d) = %v, want %v", set, o, !want, want)
		}
	}
}

// settle holds completions back while the partition is busy and hands them
// to the commit state once it is idle, once finishBatch piled up, or on the
// dispatcher's tick (flushHeld); the committable offset depends on it.
func TestPartitionSettleHandsCompletionsOnInBatches(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 1000, nil)
	for i := range finishBatch + 2 {
		b.admit(string(rune('a'+i%26)) + string(rune('A'+i/26)))
	}
	ts := b.queued()
	if len(ts) != finishBatch+2 {
		t.Fatalf("want %d distinct keys started, got %d", finishBatch+2, len(ts))
	}
	settle := func(task *task) {
		b.p.mu.Lock()
		defer b.p.mu.Unlock()
		_, idle := b.p.complete(task)
		b.p.settle(false, idle)
	}
	before := b.p.state.Snapshot().Marked
	settle(ts[0])
	if m := b.p.state.Snapshot().Marked; m != before {
		t.Fatalf("one completion while busy must be held back, yet the mark moved from %d to %d", before, m)
	}
	b.p.flushHeld()
	if m := b.p.state.Snapshot().Marked; m != 1 {
		t.Fatalf("the tick's flush must hand offset 0 on: want mark 1, got %d", m)
	}
	for _, task := range ts[1:finishBatch] {
		settle(task)
	}
	if m := b.p.state.Snapshot().Marked; m != 1 {
		t.Fatalf("%d completions are below the batch: want mark 1 still, got %d", finishBatch-1, m)
	}
	settle(ts[finishBatch])
	if m := b.p.state.Snapshot().Marked; m != finishBatch+1 {
		t.Fatalf("a full batch must reach the commit state: want mark %d, got %d", finishBatch+1, m)
	}
	settle(ts[finishBatch+1])
	if m := b.p.state.Snapshot().Marked; m != finishBatch+2 {
		t.Fatalf("the last completion leaves the partition idle and must be handed on: want mark %d, got %d", finishBatch+2, m)
	}
}
