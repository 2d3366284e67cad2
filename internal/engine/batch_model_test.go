package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// modelBatch is a batch handler for TestLotsAgainstAModel: it fails
// each (offset, delivery) pseudo-randomly (seeded), records every call, and
// checks that no key is in two calls at once.
type modelBatch struct {
	seed     uint64
	failRate uint64 // out of 100
	maxFails int    // a message fails at most this many deliveries

	mu       sync.Mutex
	active   map[string]int // calls in progress holding the key
	overlap  []string
	calls    [][]modelResult
	delivers map[int64]int // deliveries per offset so far
}

type modelResult struct {
	key    string
	offset int64
	failed bool
}

func (h *modelBatch) fails(off int64, n int) bool {
	if n > h.maxFails {
		return false
	}
	f := fnv.New64a()
	fmt.Fprintf(f, "%d/%d/%d", h.seed, off, n)
	return f.Sum64()%100 < h.failRate
}

func (h *modelBatch) HandleBatch(ctx context.Context, msgs []*handler.Message) error {
	keys := map[string]bool{}
	for _, m := range msgs {
		keys[string(m.Key)] = true
	}
	h.mu.Lock()
	for k := range keys {
		if h.active[k]++; h.active[k] > 1 {
			h.overlap = append(h.overlap, k)
		}
	}
	errs := make([]error, len(msgs))
	call := make([]modelResult, len(msgs))
	for i, m := range msgs {
		h.delivers[m.Offset]++
		if h.fails(m.Offset, h.delivers[m.Offset]) {
			errs[i] = errors.New("model failure")
		}
		call[i] = modelResult{key: string(m.Key), offset: m.Offset, failed: errs[i] != nil}
	}
	h.calls = append(h.calls, call)
	h.mu.Unlock()
	time.Sleep(time.Duration(len(msgs)) * time.Millisecond) // let other lots overlap in time
	h.mu.Lock()
	for k := range keys {
		h.active[k]--
	}
	h.mu.Unlock()
	return handler.BatchResult(errs)
}

// Randomized: keys, failures in place, lot sizes and waits vary; every
// message must end committed, no key may be in two HandleBatch calls at
// once, and each key's messages must be done (their last delivery, which
// succeeded) in offset order.
func TestLotsAgainstAModel(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		for _, max := range []int{1, 2, 3, 7} {
			for _, wait := range []time.Duration{0, 5 * time.Millisecond} {
				name := fmt.Sprintf("seed%d/max%d/wait%v", seed, max, wait)
				t.Run(name, func(t *testing.T) { runBatchModel(t, seed, max, wait) })
			}
		}
	}
}

func runBatchModel(t *testing.T, seed uint64, max int, wait time.Duration) {
	synctest.Test(t, func(t *testing.T) {
		h := &modelBatch{seed: seed, failRate: 30, maxFails: 3, active: map[string]int{}, delivers: map[int64]int{}}
		r := newBatchRig(t, h, max, wait)
		c := r.claim("t", 0)
		r.dispatch(c)
		keys := []string{"a", "b", "c", "d"}
		const n = 120
		var sent int64
		for sent < n {
			chunk := int(seed*7+uint64(sent))%9 + 1
			var ks []string
			for i := 0; i < chunk && sent < n; i++ {
				f := fnv.New64a()
				fmt.Fprintf(f, "%d/%d", seed, sent)
				ks = append(ks, keys[f.Sum64()%uint64(len(keys))])
				sent++
			}
			c.claim.send(t, ks...)
			synctest.Wait()
			time.Sleep(time.Duration(seed%5) * time.Millisecond)
		}
		deadline := time.Now().Add(10 * time.Minute)
		for c.p.state.Snapshot().Marked < n && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			c.p.flushHeld()
		}
		marked := c.p.state.Snapshot().Marked
		r.shutdown(t, c)
		if marked != n {
			t.Fatalf("committable offset %d, want %d", marked, n)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		total := 0
		for _, d := range h.delivers {
			total += d
		}
		t.Logf("%d calls, %d deliveries of %d messages", len(h.calls), total, n)
		if len(h.overlap) > 0 {
			t.Fatalf("keys in two lots at once: %v", h.overlap)
		}
		// The last delivery of each offset is its done one.
		last := map[int64]int{}
		for i, call := range h.calls {
			for _, m := range call {
				last[m.offset] = i
			}
		}
		for i, call := range h.calls {
			for _, m := range call {
				if last[m.offset] == i && m.failed {
					t.Fatalf("offset %d's last delivery (call %d) failed, yet it was committed", m.offset, i)
				}
			}
		}
		// Per key: done in offset order (call index non-decreasing).
		byKey := map[string][]int64{}
		keyOf := map[int64]string{}
		for _, call := range h.calls {
			for _, m := range call {
				keyOf[m.offset] = m.key
			}
		}
		for o := int64(0); o < n; o++ {
			byKey[keyOf[o]] = append(byKey[keyOf[o]], o)
		}
		for k, offs := range byKey {
			for j := 1; j < len(offs); j++ {
				if last[offs[j]] < last[offs[j-1]] {
					t.Fatalf("key %s: offset %d done in call %d, before offset %d (call %d)", k, offs[j], last[offs[j]], offs[j-1], last[offs[j-1]])
				}
			}
		}
	})
}
