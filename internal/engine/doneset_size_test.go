package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// dsRandomRanges makes n ascending, disjoint ranges above base, with gaps
// and lengths of every uvarint width up to wide bytes. Gaps are at least 1
// (as the tracker's ranges, which never touch) unless touching allows 0
// (as the carried-forward ranges of refreshDoneSet may be).
func dsRandomRanges(rng *rand.Rand, base int64, n, wide int, touching bool) []doneset.Range {
	draw := func(lo int64) int64 {
		bits := 7 * (1 + rng.IntN(wide)) // a uvarint of up to that many bytes
		v := rng.Int64N(int64(1) << min(bits, 40))
		if rng.IntN(3) == 0 {
			v = rng.Int64N(4) // small values often: the common case
		}
		return max(v, lo)
	}
	out := make([]doneset.Range, 0, n)
	prev := base
	for i := range n {
		gapMin := int64(1)
		if i == 0 || touching {
			gapMin = 0
		}
		start := prev + draw(gapMin)
		end := start + draw(1)
		out = append(out, doneset.Range{Start: start, End: end})
		prev = end
	}
	return out
}

// doneset.EncodedSize is the length of doneset.Encode's output whenever that
// output holds every range, doneset.Encode drops ranges exactly when the
// size says they do not fit, what it keeps is the longest prefix that fits,
// and the encoding round-trips.
func TestDoneSetSizeMatchesEncoding(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 7))
			var whole, truncated int
			for round := range 1500 {
				base := []int64{0, 1, 1000, 1 << 40, int64(rng.Uint32())}[rng.IntN(5)]
				n := 1 + rng.IntN([]int{4, 64, 600, 2500}[rng.IntN(4)])
				ranges := dsRandomRanges(rng, base, n, 1+rng.IntN(5), rng.IntN(4) == 0)
				meta := doneset.Encode(base, ranges)
				size := doneset.EncodedSize(base, ranges)
				if len(meta) > doneset.MaxBytes {
					t.Fatalf("round %d: metadata of %d bytes, over %d", round, len(meta), doneset.MaxBytes)
				}
				got, err := doneset.Decode(meta)
				if err != nil {
					t.Fatalf("round %d: decode %q: %v", round, meta, err)
				}
				if len(got) > len(ranges) || !slices.Equal([]doneset.Range(got), ranges[:len(got)]) {
					t.Fatalf("round %d: decoded %d ranges that are not a prefix of the %d encoded", round, len(got), len(ranges))
				}
				if len(got) == len(ranges) {
					whole++
					if size != len(meta) {
						t.Fatalf("round %d: %d ranges, nothing dropped: doneset.EncodedSize %d, len(doneset.Encode) %d",
							round, len(ranges), size, len(meta))
					}
					continue
				}
				truncated++
				if size <= doneset.MaxBytes {
					t.Fatalf("round %d: doneset.EncodedSize %d fits %d, yet doneset.Encode kept %d of %d ranges",
						round, size, doneset.MaxBytes, len(got), len(ranges))
				}
				// The prefix kept is the longest that fits.
				if kept := doneset.EncodedSize(base, ranges[:len(got)]); len(got) > 0 && kept != len(meta) {
					t.Fatalf("round %d: the kept prefix sizes %d, its encoding is %d bytes", round, kept, len(meta))
				}
				if more := doneset.EncodedSize(base, ranges[:len(got)+1]); more <= doneset.MaxBytes {
					t.Fatalf("round %d: kept %d ranges, but %d would fit in %d bytes", round, len(got), len(got)+1, more)
				}
			}
			if whole == 0 || truncated == 0 {
				t.Fatalf("weak run: %d whole, %d truncated", whole, truncated)
			}
		})
	}
}

// At the limit: a done-set of exactly doneset.MaxBytes is kept whole, one of
// a byte more loses its last range.
func TestDoneSetSizeAtTheLimit(t *testing.T) {
	t.Parallel()
	for _, base := range []int64{0, 7, 1 << 40} {
		head := len(doneset.Prefix) + len(strconv.FormatInt(base, 10)) + 1
		// Ranges of gap 1, length 1: two raw bytes each. Find the largest
		// count whose encoding fits, then check both sides of the limit.
		var ranges []doneset.Range
		prev := base
		for doneset.EncodedSize(base, append(ranges, doneset.Range{Start: prev + 1, End: prev + 2})) <= doneset.MaxBytes {
			ranges = append(ranges, doneset.Range{Start: prev + 1, End: prev + 2})
			prev += 2
		}
		meta := doneset.Encode(base, ranges)
		if got, err := doneset.Decode(meta); err != nil || len(got) != len(ranges) {
			t.Fatalf("base %d: %d ranges sized %d <= %d: decoded %d (%v)", base, len(ranges), doneset.EncodedSize(base, ranges), doneset.MaxBytes, len(got), err)
		}
		if len(meta) != doneset.EncodedSize(base, ranges) || len(meta) > doneset.MaxBytes || len(meta) < doneset.MaxBytes-3 {
			t.Fatalf("base %d: %d bytes, size %d, head %d", base, len(meta), doneset.EncodedSize(base, ranges), head)
		}
		over := append(slices.Clone(ranges), doneset.Range{Start: prev + 1, End: prev + 2})
		if got, _ := doneset.Decode(doneset.Encode(base, over)); len(got) != len(ranges) {
			t.Fatalf("base %d: one range over the limit: kept %d, want %d", base, len(got), len(ranges))
		}
	}
}

// No ranges: doneset.Encode writes nothing at all, while doneset.EncodedSize
// counts the header. The doc says "the length of doneset.Encode(base,
// ranges) had it no budget", which does not hold here; harmless for
// doneSetRoom, which never sizes fewer than 64 ranges. Pinned so that a
// change is noticed.
func TestDoneSetSizeOfNothing(t *testing.T) {
	t.Parallel()
	if meta := doneset.Encode(5, nil); meta != "" {
		t.Fatalf("doneset.Encode(5, nil) = %q", meta)
	}
	if got, want := doneset.EncodedSize(5, nil), len("kw1:5:"); got != want {
		t.Fatalf("doneset.EncodedSize(5, nil) = %d, want %d (the header)", got, want)
	}
}

// dsState reads the partition's done-set under its lock.
func dsState(p *partition) (base int64, ranges []doneset.Range, held int) {
	base, ranges = p.state.DoneRanges()
	return base, ranges, p.state.Held()
}

// dsFreed reports whether the dispatcher's wake-up is pending, and takes it.
func dsFreed(p *partition) bool {
	select {
	case <-p.state.Freed():
		return true
	default:
		return false
	}
}

// dsCheckWhole fails unless the done-set encodes without dropping a range,
// both directly and as refreshDoneSet writes it into the next commit.
func dsCheckWhole(t *testing.T, p *partition) {
	t.Helper()
	base, ranges, _ := dsState(p)
	if size := doneset.EncodedSize(base, ranges); size > doneset.MaxBytes {
		t.Fatalf("%d done ranges above %d: the done-set takes %d bytes, over the %d limit", len(ranges), base, size, doneset.MaxBytes)
	}
	got, err := doneset.Decode(doneset.Encode(base, ranges))
	if err != nil || !slices.Equal([]doneset.Range(got), ranges) {
		t.Fatalf("%d done ranges above %d: doneset.Encode kept %d (%v)", len(ranges), base, len(got), err)
	}
	_, meta, _ := p.state.NextCommit()
	if got, err := doneset.Decode(meta); err != nil || !slices.Equal([]doneset.Range(got), ranges) {
		t.Fatalf("the next commit's done-set holds %d of the %d ranges (%v)", len(got), len(ranges), err)
	}
}

// Intake stops before the done-set outgrows the commit metadata: the keys
// alternate, the slow key's messages (the even offsets, from 0) stay
// unfinished while the fast key's (the odd ones) finish at once, so each
// admitted pair adds a done range. Admission must stop while the done-set
// still fits whole, wake the dispatcher on completions, and resume once the
// slow key catches up.
func TestPartitionDoneSetBackPressure(t *testing.T) {
	t.Parallel()
	const budget = 1 << 20 // the in-flight budget is never what stops intake
	b := setupPartition(t, budget, nil)
	slow := 0 // the slow key's messages, all held
	var head *task
	refusedAt := int64(-1)
	for b.offset < 4*doneset.MaxBytes {
		o := b.offset
		key := "slow"
		if o%2 == 1 {
			key = "fast"
		}
		before, beforeRanges, _ := dsState(b.p)
		m := &sarama.ConsumerMessage{Topic: "t", Key: []byte(key), Offset: o}
		n, full := b.p.admit([]*sarama.ConsumerMessage{m})
		if n == 0 {
			if !full {
				t.Fatalf("offset %d refused but not reported full", o)
			}
			if !b.p.state.Snapshot().DoneSetFull {
				t.Fatalf("offset %d refused with the budget free and doneSetFull unset", o)
			}
			// It refused because the done-set passed 90% of the limit...
			// (counting what one more range of the widest encoding adds)...
			if size := doneset.EncodedSize(before, beforeRanges); size <= doneset.MaxBytes*9/10-32 {
				t.Fatalf("offset %d refused with the done-set at %d bytes, not within a range of 90%% of %d", o, size, doneset.MaxBytes)
			}
			// ...and before it had to drop anything.
			dsCheckWhole(t, b.p)
			refusedAt = o
			break
		}
		if full {
			t.Fatalf("offset %d admitted, all of the batch, yet reported full", o)
		}
		b.offset++
		for _, tk := range b.queued() {
			switch off := tk.msg.Offset; { // read before finishing: a done task is reused
			case off == 0:
				head = tk
			case off%2 == 1:
				if next := b.finish(tk); next != nil {
					t.Fatalf("fast key: finishing %d handed back %d", off, next.msg.Offset)
				}
			default:
				t.Fatalf("slow key: %d started while 0 runs", off)
			}
		}
		if o%2 == 0 {
			slow++
		}
	}
	if refusedAt < 0 || head == nil {
		t.Fatalf("admitted %d messages of which half stay unfinished: intake never stopped", b.offset)
	}
	base, ranges, held := dsState(b.p)
	t.Logf("intake stopped at offset %d: %d held, %d ranges above %d, %d bytes", refusedAt, held, len(ranges), base, doneset.EncodedSize(base, ranges))
	if base != 0 || held != slow || len(ranges) != held { // a fast offset's range after each slow one
		t.Fatalf("committable %d, %d held, %d ranges; want 0, %d and %d", base, held, len(ranges), slow, slow)
	}
	if dsFreed(b.p) {
		t.Fatal("freed signalled before anything finished")
	}
	// Still refused, again and again, without a completion.
	for range 3 {
		if b.admit("fast") {
			t.Fatal("admitted with the done-set still over 90%")
		}
	}

	// The slow key catches up, one completion at a time, from the head on:
	// each completion wakes the starved dispatcher, and intake resumes once
	// the done-set is back under 90% (the head's completion drops the range
	// right behind it, which may be enough).
	resumed := false
	for tk := head; tk != nil; {
		off := tk.msg.Offset // read before finishing: a done task is reused
		next := b.finish(tk)
		if tk == head && (next == nil || next.msg.Offset != 2) {
			t.Fatalf("finishing the head handed back %v, want the slow key's offset 2", next)
		}
		dsCheckWhole(t, b.p)
		if !resumed {
			if !dsFreed(b.p) {
				t.Fatalf("finishing %d did not wake the starved dispatcher", off)
			}
			base, ranges, _ := dsState(b.p)
			size := doneset.EncodedSize(base, ranges)
			room := size <= doneset.MaxBytes*9/10
			ok := b.admit("other")
			if ok != room {
				t.Fatalf("after finishing %d: admitted %v with the done-set at %d bytes", off, ok, size)
			}
			if resumed = ok; ok {
				t.Logf("intake resumed after finishing %d: %d ranges, %d bytes", off, len(ranges), size)
				for _, q := range b.queued() {
					b.finish(q)
				}
			}
		}
		tk = next
	}
	if !resumed {
		t.Fatal("intake never resumed while the slow key caught up")
	}
	if base, ranges, held := dsState(b.p); held != 0 || len(ranges) != 0 || base != b.offset {
		t.Fatalf("all done: committable %d (want %d), %d held, %d ranges", base, b.offset, held, len(ranges))
	}
	for range 10 {
		if !b.admit("fast") {
			t.Fatal("refused with nothing held")
		}
	}
}

// dsAdmitBatch admits ms in dispatcher-sized batches until admit refuses
// one; it returns how many were admitted.
func dsAdmitBatch(p *partition, ms []*sarama.ConsumerMessage) int {
	total := 0
	for len(ms) > 0 {
		n, full := p.admit(ms[:min(len(ms), maxBatch)])
		total += n
		ms = ms[n:]
		if full {
			break
		}
	}
	return total
}

// One batch cannot overshoot: each message of a batch (up to maxBatch) may
// add a range (an offset never delivered before a handled one, or a
// skipped one, behind an unfinished offset), so admit counts a range of the
// widest encoding per message against the room left. Here a compacted
// topic (every odd offset gone) with a stuck key: the done-set must still
// fit whole after the batch.
func TestPartitionDoneSetBatchOvershoot(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 1<<20, nil)
	msg := func(o int64) *sarama.ConsumerMessage {
		return &sarama.ConsumerMessage{Topic: "t", Key: []byte("stuck"), Offset: o}
	}
	// One message at a time up to just under the threshold...
	o := int64(0)
	for {
		base, ranges, _ := dsState(b.p)
		if doneset.EncodedSize(base, ranges) > doneset.MaxBytes*9/10-10 {
			break
		}
		if n, _ := b.p.admit([]*sarama.ConsumerMessage{msg(o)}); n != 1 {
			t.Fatalf("offset %d refused under the threshold", o)
		}
		o += 2
	}
	// ...then one batch as the dispatcher takes it from the claim.
	var batch []*sarama.ConsumerMessage
	for range maxBatch {
		batch = append(batch, msg(o))
		o += 2
	}
	n := dsAdmitBatch(b.p, batch)
	base, ranges, _ := dsState(b.p)
	t.Logf("batch: %d of %d admitted; %d ranges above %d, %d bytes", n, len(batch), len(ranges), base, doneset.EncodedSize(base, ranges))
	dsCheckWhole(t, b.p)
}

// A design limit, logged: the 90% threshold bounds the done-set only while
// messages are admitted; messages already held can fragment it further as
// they finish, by up to one range per two held messages, and nothing
// bounds that but WORKER_MAX_IN_FLIGHT. At the default of 1000: a stuck
// key with long runs of finished messages between its messages (3 bytes a
// range) brings the done-set near 90%, a block of independent messages is
// admitted (contiguous, it adds no range), and every other one of them
// finishes: the done-set outgrows the commit metadata. The commit then
// keeps the lowest ranges, and a WARN says so.
func TestPartitionDoneSetFragmentsAfterIntake(t *testing.T) {
	t.Parallel()
	const budget = 1000 // WORKER_MAX_IN_FLIGHT's default
	b := setupPartition(t, budget, nil)
	size := func() int {
		base, ranges, _ := dsState(b.p)
		return doneset.EncodedSize(base, ranges)
	}
	// A stuck key, then 128 fast messages, again and again.
	for size() < doneset.MaxBytes*9/10-20 {
		if !b.admit("stuck") {
			t.Fatalf("offset %d refused at %d bytes", b.offset, size())
		}
		for range 128 {
			if !b.admit("fast") {
				t.Fatalf("offset %d refused at %d bytes", b.offset, size())
			}
			for _, tk := range b.queued() {
				if tk.msg.Offset == b.offset-1 {
					b.finish(tk)
				}
			}
		}
	}
	b.queued() // the stuck key's first message runs; the rest wait behind it
	// A block of independent messages up to the in-flight budget.
	_, _, held := dsState(b.p)
	var block []*sarama.ConsumerMessage
	for i := range budget - held {
		block = append(block, &sarama.ConsumerMessage{Topic: "t", Key: []byte("k" + strconv.Itoa(i)), Offset: b.offset + int64(i)})
	}
	if n := dsAdmitBatch(b.p, block); n != len(block) {
		t.Fatalf("block: %d of %d admitted at %d bytes", n, len(block), size())
	}
	b.offset += int64(len(block))
	// Every other one of them finishes.
	for i, tk := range b.queued() {
		if i%2 == 1 {
			b.finish(tk)
		}
	}
	base, ranges, held := dsState(b.p)
	t.Logf("%d held, %d ranges above %d, %d bytes", held, len(ranges), base, doneset.EncodedSize(base, ranges))
	if doneset.EncodedSize(base, ranges) <= doneset.MaxBytes {
		t.Fatalf("the pattern no longer outgrows the metadata (%d bytes): the test does not test the limit", doneset.EncodedSize(base, ranges))
	}
	// What is committed then is a prefix: nothing is claimed done that is
	// not (a restart handles the rest again, never skips it), and the
	// worker says so once.
	_, meta, warned := b.p.state.NextCommit()
	b.p.state.NextCommit()
	if !warned {
		t.Fatal("the done-set outgrew the metadata and nothing was logged")
	}
	set, err := doneset.Decode(meta)
	if err != nil || len(set) == 0 || len(set) >= len(ranges) {
		t.Fatalf("committed done-set %d ranges (%v) of %d: want a non-empty strict prefix", len(set), err, len(ranges))
	}
	for i, r := range set {
		if r != ranges[i] {
			t.Fatalf("committed range %d is %v, want %v (a prefix of what is done)", i, r, ranges[i])
		}
	}
}

// Fixed wake-up race: admit reads the room (in-flight budget and
// done-set) under the lock, releases it to build the tasks, and sets
// starved under the lock again when it took fewer than offered. A
// completion in between sees starved still false and sends no wake-up, so
// the dispatcher holds back with room free until stallAfter (500ms) fires
// and it pauses the partition. Statistical: it counts the lost wake-ups in
// many tries of budget 1, one message held, its completion racing the next
// admit.
func TestPartitionDoneSetIntakeLostWakeup(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 1, nil)
	if !b.admit("k") {
		t.Fatal("the first message refused")
	}
	heldTask := b.queued()[0]
	lost := 0
	for i := range 200000 {
		done := make(chan struct{})
		go func(tk *task) { defer close(done); b.finish(tk) }(heldTask)
		m := &sarama.ConsumerMessage{Topic: "t", Key: []byte("k" + strconv.Itoa(i)), Offset: b.offset}
		n, _ := b.p.admit([]*sarama.ConsumerMessage{m})
		<-done
		if n == 0 {
			if !dsFreed(b.p) && b.p.inMemory() == 0 {
				lost++ // refused, nothing held, and no wake-up pending
			}
			if n, _ = b.p.admit([]*sarama.ConsumerMessage{m}); n != 1 {
				t.Fatal("refused with nothing held")
			}
		}
		dsFreed(b.p)
		b.offset++
		heldTask = b.queued()[0]
	}
	if lost > 0 {
		t.Fatalf("%d times admit refused while its only held message finished, with no wake-up sent", lost)
	}
}
