package engine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Review tests of the chunked admission of inline runs (dispatcher.admitAndRun).

// pausedOverflow fills partition t/0's budget (MaxInFlight budget) with key
// h behind offset 0, which blocks inline on release (and is handed off),
// sends n more messages of keys cycling over 8, and waits past stallAfter:
// the dispatcher pauses and reads all n into its overflow. Handlers of the
// n sleep perMsg (inline: under inlineMaxAvg).
func pausedOverflow(t *testing.T, budget, n int, perMsg time.Duration, onMsg func(*handler.Message)) (*rig, *claimed, *latch, *recorder) {
	t.Helper()
	release := newLatch()
	rec := newRecorder(func(_ context.Context, m *handler.Message) {
		switch {
		case m.Offset == 0:
			<-release.done()
		case m.Offset >= int64(budget):
			if onMsg != nil {
				onMsg(m)
			}
			time.Sleep(perMsg)
		}
	})
	r := newRig(t, rec, func(cfg *testConfig) { cfg.MaxInFlight = budget })
	r.atCleanup(release.open)
	c := r.claim("t", 0)
	c.claim.msgs = make(chan *sarama.ConsumerMessage, budget+n)
	hs := make([]string, budget)
	for i := range hs {
		hs[i] = "h"
	}
	c.claim.send(t, hs...)
	r.dispatch(c)
	time.Sleep(handoffAfter)
	synctest.Wait()
	if got := inFlight(c.p); got != uint64(budget) {
		t.Fatalf("in flight %d, want the budget %d", got, budget)
	}
	c.claim.send(t, keysCycling(n, 8)...)
	time.Sleep(stallAfter + time.Millisecond)
	synctest.Wait()
	if got := len(c.claim.msgs); got != 0 {
		t.Fatalf("paused: %d messages left in the claim, want all %d read into the overflow", got, n)
	}
	return r, c, release, rec
}

// (4) A paused partition's overflow (everything sarama had fetched) is
// admitted once the budget frees. Run inline, one chunk after another, it
// must not keep the dispatcher from its select for longer than an
// admission's inline runs were bounded to (inlineBudget): a stop, the
// session's end or a revocation that comes meanwhile ends the dispatching
// promptly. The chunks were each a stretch of their own, with a budget of
// their own, and the dispatcher looked at nothing between them: 8192
// messages of 4µs held it 32ms.
func TestChunkedOverflowDoesNotDelayTheEnd(t *testing.T) {
	for _, end := range []struct {
		name string
		do   func(*rig, *claimed)
	}{
		{"stop", func(r *rig, _ *claimed) { r.stopping.open() }},
		{"session end", func(_ *rig, c *claimed) { c.end() }},
		{"revocation", func(_ *rig, c *claimed) { c.revoke() }},
	} {
		t.Run(end.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const budget, n = 128, 8192
				r, c, release, rec := pausedOverflow(t, budget, n, 4*time.Microsecond, nil)
				release.open() // the budget frees: the overflow is admitted, a chunk at a time
				time.Sleep(time.Millisecond)
				end.do(r, c)
				ended := time.Now()
				time.Sleep(5 * time.Millisecond)
				if !c.returned() {
					<-c.runDone
					t.Fatalf("the dispatching ended %v after the %s (%d handlers run): the overflow's chunks ran inline one after another without a look at it",
						time.Since(ended), end.name, len(rec.snapshot()))
				}
				r.shutdown(t, c)
			})
		})
	}
}
