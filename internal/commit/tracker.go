package commit

import "github.com/kafkaworker/kafkaworker/internal/doneset"

// tracker is one partition's offset bookkeeping: which admitted
// offsets are unfinished, which offsets above the committable one are
// already done, and so what may be committed.
//
// Memory is bounded by what is unfinished, not by how far the partition has
// run ahead of its oldest unfinished message: unfinished offsets are nodes
// of a list in offset order (at most the in-flight budget of them). What is
// done above the committable offset is not stored: it is everything from
// the oldest unfinished offset to the last admitted one that is not
// unfinished, so the done ranges are the gaps between neighbouring nodes
// (and after the last node), derived when a commit needs them. Finishing a
// message is an unlink from the list and a change of the range count, in
// constant time wherever it sits. One message stuck with a million
// finished after it is one node and one range; there are at most held
// ranges.
//
// Offsets that were never delivered between two admitted ones (compaction,
// transaction markers) and skipped ones count as done, so ranges join
// across them.
//
// Not safe for concurrent use: the State that holds it guards it with its lock.
type tracker[T any] struct {
	nodes      []node[T]       // unfinished offsets; index = handle; grows to the peak held count
	free       []int32         // free node indexes
	head, tail int32           // the unfinished list, oldest first; -1 when empty
	held       int             // unfinished offsets
	ranges     int             // done ranges above the committable offset
	start      int64           // the committable offset before anything is admitted (-1: unknown)
	last       int64           // the last admitted offset, -1 before the first
	done       []doneset.Range // doneRanges' buffer
	// For doneSizeBound: the done-set's uvarint bytes at the last walk, and
	// the changes (reserve, skip, finish) since.
	walkedRaw, changes int
}

// node is an unfinished offset in the list.
type node[T any] struct {
	offset     int64
	prev, next int32
	ref        T // what is unfinished: the engine's message
}

// noNode ends the unfinished list.
const noNode = -1

// newTracker tracks a partition whose committable offset is start
// (the committed offset the claim began at, or -1 when not known yet).
func newTracker[T any](start int64) *tracker[T] {
	return &tracker[T]{head: noNode, tail: noNode, start: start, last: -1}
}

// reserve admits offset as unfinished and returns its handle. Offsets must
// be admitted in ascending order.
func (o *tracker[T]) reserve(offset int64, ref T) int32 {
	if o.tail != noNode {
		// The range after the old tail, if any, now ends at offset; one
		// starts there when something lies between the two.
		o.ranges += b2i(offset > o.nodes[o.tail].offset+1) - b2i(o.last > o.nodes[o.tail].offset)
	}
	o.last = offset
	var h int32
	if n := len(o.free); n > 0 {
		h, o.free = o.free[n-1], o.free[:n-1]
	} else {
		h = int32(len(o.nodes))
		o.nodes = append(o.nodes, node[T]{})
	}
	o.nodes[h] = node[T]{offset: offset, prev: o.tail, next: noNode, ref: ref}
	if o.tail != noNode {
		o.nodes[o.tail].next = h
	} else {
		o.head = h
	}
	o.tail = h
	o.held++
	o.changes++
	return h
}

// skip admits offset as already done (the previous owner handled it, or it
// lies before the claim's start). With nothing unfinished the committable
// offset moves past it; otherwise it joins the range after the last node.
func (o *tracker[T]) skip(offset int64) {
	if o.tail != noNode && o.last == o.nodes[o.tail].offset {
		o.ranges++ // the first done offset after the last node
	}
	o.last = offset
	o.changes++
}

// finish marks the unfinished offset of handle h done and reports whether
// the committable offset moved.
func (o *tracker[T]) finish(h int32) (advanced bool) {
	n := o.nodes[h]
	// What is done right after n: up to the next node, or to the last
	// admitted offset.
	after := o.last > n.offset
	if n.next != noNode {
		after = o.nodes[n.next].offset > n.offset+1
		o.nodes[n.next].prev = n.prev
	} else {
		o.tail = n.prev
	}
	if n.prev != noNode {
		// n joins the ranges on either side into one.
		o.ranges += 1 - b2i(n.offset > o.nodes[n.prev].offset+1) - b2i(after)
		o.nodes[n.prev].next = n.next
	} else {
		// The head: the committable offset moves to the next node, and the
		// range that followed n lies below it now.
		o.ranges -= b2i(after)
		o.head = n.next
	}
	o.nodes[h] = node[T]{}
	o.free = append(o.free, h)
	o.held--
	o.changes++
	return n.prev == noNode
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// committable is the offset to commit: the oldest unfinished one, or the
// one after the last admitted when nothing is unfinished; -1 when unknown.
func (o *tracker[T]) committable() int64 {
	if o.head != noNode {
		return o.nodes[o.head].offset
	}
	if o.last >= 0 {
		return max(o.last+1, o.start)
	}
	return o.start
}

// doneRanges lists what is done above the committable offset, ascending:
// the gaps between unfinished offsets. It walks the unfinished list; the
// slice is the tracker's own buffer, valid until the next call: read it
// under the same lock.
func (o *tracker[T]) doneRanges() []doneset.Range {
	d := o.done[:0]
	raw, prev := 0, o.committable()
	for h := o.head; h != noNode; h = o.nodes[h].next {
		from, to := o.nodes[h].offset+1, o.last+1
		if next := o.nodes[h].next; next != noNode {
			to = o.nodes[next].offset
		}
		if to > from {
			d = append(d, doneset.Range{Start: from, End: to})
			raw += doneset.UvarintLen(uint64(from-prev)) + doneset.UvarintLen(uint64(to-from))
			prev = to
		}
	}
	o.done, o.walkedRaw, o.changes = d, raw, 0
	return d
}

// doneSizeBound bounds the uvarint bytes of the done-set now, without a
// walk: the size at the last walk plus, for each change since, the most
// one can add. A finish inside a run of unfinished offsets splits it in
// two around a new range: three uvarints where there was one; a reserve or
// a skip adds at most two; a finish that moves the committable offset only
// drops ranges. widest is the byte length of the largest gap or range
// length possible (the uvarint of the span above the committable offset).
func (o *tracker[T]) doneSizeBound(widest int) int {
	return o.walkedRaw + o.changes*3*widest
}

// rangeCount is len(doneRanges()), without the walk.
func (o *tracker[T]) rangeCount() int { return o.ranges }

// heldCount is how many admitted offsets are unfinished.
func (o *tracker[T]) heldCount() int { return o.held }

// oldest returns the oldest unfinished node, if any.
func (o *tracker[T]) oldest() (node[T], bool) {
	if o.head == noNode {
		return node[T]{}, false
	}
	return o.nodes[o.head], true
}

// each calls fn for the unfinished nodes, oldest first, until it returns
// false.
func (o *tracker[T]) each(fn func(node[T]) bool) {
	for h := o.head; h != noNode; h = o.nodes[h].next {
		if !fn(o.nodes[h]) {
			return
		}
	}
}
