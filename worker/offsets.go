package worker

import "sort"

// offsetTracker is one partition's offset bookkeeping: which admitted
// offsets are unfinished, which offsets above the committable one are
// already done, and so what may be committed.
//
// Memory is bounded by what is unfinished, not by how far the partition has
// run ahead of its oldest unfinished message: unfinished offsets are nodes
// of a list in offset order (at most the in-flight budget of them), and
// everything done above the committable offset is a list of ranges, as the
// done-set committed beside the offset records it. One message stuck with a
// million finished after it is one node and one range. Ranges are separated
// by unfinished offsets, so there are at most held+1 of them.
//
// Offsets that were never delivered between two admitted ones (compaction,
// transaction markers) count as done, so ranges join across them.
//
// Not safe for concurrent use: the partition's lock guards it.
type offsetTracker struct {
	nodes      []offsetNode // unfinished offsets; index = handle; grows to the peak held count
	free       []int32      // free node indexes
	head, tail int32        // the unfinished list, oldest first; -1 when empty
	held       int          // unfinished offsets
	start      int64        // the committable offset before anything is admitted (-1: unknown)
	last       int64        // the last admitted offset, -1 before the first
	done       []offsetRange
}

// offsetNode is an unfinished offset in the list.
type offsetNode struct {
	offset     int64
	prev, next int32
	task       *task // what is unfinished; nil in unit tests
}

// noNode ends the unfinished list.
const noNode = -1

// newOffsetTracker tracks a partition whose committable offset is start
// (the committed offset the claim began at, or -1 when not known yet).
func newOffsetTracker(start int64) *offsetTracker {
	return &offsetTracker{head: noNode, tail: noNode, start: start, last: -1}
}

// reserve admits offset as unfinished and returns its handle. Offsets must
// be admitted in ascending order.
func (o *offsetTracker) reserve(offset int64, t *task) int32 {
	o.admitted(offset)
	var h int32
	if n := len(o.free); n > 0 {
		h, o.free = o.free[n-1], o.free[:n-1]
	} else {
		h = int32(len(o.nodes))
		o.nodes = append(o.nodes, offsetNode{})
	}
	o.nodes[h] = offsetNode{offset: offset, prev: o.tail, next: noNode, task: t}
	if o.tail != noNode {
		o.nodes[o.tail].next = h
	} else {
		o.head = h
	}
	o.tail = h
	o.held++
	return h
}

// skip admits offset as already done (the previous owner handled it, or it
// lies before the claim's start).
func (o *offsetTracker) skip(offset int64) {
	o.admitted(offset)
	if o.head != noNode {
		o.addDone(offset, offset+1)
	}
	// With nothing unfinished the committable offset moves past it.
}

// admitted records offset as the last admitted, counting the offsets
// skipped since the previous one as done.
// (A gap matters only behind an unfinished offset: with none, the
// committable offset moves past it anyway.)
func (o *offsetTracker) admitted(offset int64) {
	prev := o.last
	o.last = offset
	if o.head != noNode && offset > prev+1 { // something unfinished: prev >= 0
		o.addDone(prev+1, offset)
	}
}

// finish marks the unfinished offset of handle h done and reports whether
// the committable offset moved.
func (o *offsetTracker) finish(h int32) (advanced bool) {
	n := o.nodes[h]
	if n.prev != noNode {
		o.nodes[n.prev].next = n.next
	} else {
		o.head = n.next
	}
	if n.next != noNode {
		o.nodes[n.next].prev = n.prev
	} else {
		o.tail = n.prev
	}
	o.nodes[h] = offsetNode{}
	o.free = append(o.free, h)
	o.held--
	if n.prev != noNode {
		o.addDone(n.offset, n.offset+1) // behind an unfinished one: remember it
		return false
	}
	o.dropDoneBelow(o.committable())
	return true
}

// committable is the offset to commit: the oldest unfinished one, or the
// one after the last admitted when nothing is unfinished; -1 when unknown.
func (o *offsetTracker) committable() int64 {
	if o.head != noNode {
		return o.nodes[o.head].offset
	}
	if o.last >= 0 {
		return max(o.last+1, o.start)
	}
	return o.start
}

// doneRanges lists what is done above the committable offset, ascending.
// The slice is the tracker's own: read it under the same lock.
func (o *offsetTracker) doneRanges() []offsetRange { return o.done }

// heldCount is how many admitted offsets are unfinished.
func (o *offsetTracker) heldCount() int { return o.held }

// oldest returns the oldest unfinished node, if any.
func (o *offsetTracker) oldest() (offsetNode, bool) {
	if o.head == noNode {
		return offsetNode{}, false
	}
	return o.nodes[o.head], true
}

// each calls fn for the unfinished nodes, oldest first, until it returns
// false.
func (o *offsetTracker) each(fn func(offsetNode) bool) {
	for h := o.head; h != noNode; h = o.nodes[h].next {
		if !fn(o.nodes[h]) {
			return
		}
	}
}

// addDone adds [start, end) to the done ranges, joining neighbours.
func (o *offsetTracker) addDone(start, end int64) {
	d := o.done
	if n := len(d); n == 0 || start > d[n-1].end {
		o.done = append(d, offsetRange{start, end})
		return
	} else if start == d[n-1].end {
		d[n-1].end = end
		return
	}
	// Out of order, most often close to the end: the first range ending at
	// or after start, looked for backwards a few steps, then by bisection.
	i := len(d) - 1
	for steps := 0; i > 0 && d[i-1].end >= start; i-- {
		if steps++; steps == 8 {
			i = sort.Search(i, func(i int) bool { return d[i].end >= start })
			break
		}
	}
	switch {
	case d[i].start > end: // a range of its own before d[i]
		o.done = append(d, offsetRange{})
		copy(o.done[i+1:], d[i:])
		o.done[i] = offsetRange{start, end}
	default: // touches or overlaps d[i]: widen it, then absorb what follows
		d[i].start = min(d[i].start, start)
		d[i].end = max(d[i].end, end)
		j := i + 1
		for j < len(d) && d[j].start <= d[i].end {
			d[i].end = max(d[i].end, d[j].end)
			j++
		}
		o.done = append(d[:i+1], d[j:]...)
	}
}

// dropDoneBelow forgets the ranges below offset, the committable one.
func (o *offsetTracker) dropDoneBelow(offset int64) {
	i := 0
	for i < len(o.done) && o.done[i].end <= offset {
		i++
	}
	if i > 0 {
		o.done = append(o.done[:0], o.done[i:]...)
	}
}
