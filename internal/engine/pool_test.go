package engine

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// admitKey admits n messages of key into c's partition, directly (no
// dispatcher), and fails unless all fit.
func admitKey(t *testing.T, c *claimed, key string, n int) {
	t.Helper()
	ms := make([]*sarama.ConsumerMessage, n)
	for i := range ms {
		ms[i] = c.claim.message(key)
	}
	if got, _ := c.p.admit(ms); got != n {
		t.Fatalf("admitted %d of %d", got, n)
	}
}

// A key with a long backlog gives its goroutine up as soon as anything else
// waits: with one goroutine, a message of another key (or of another
// partition) admitted while the backlog's first message runs goes next.
func TestPoolBacklogDoesNotStarveOtherKeys(t *testing.T) {
	const backlog = 100
	for _, otherTopic := range []string{"t", "u"} {
		name := map[string]string{"t": "same partition", "u": "other partition"}[otherTopic]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				first := newLatch()
				rec := newRecorder(func(_ context.Context, m *handler.Message) {
					if m.Topic == "t" && string(m.Key) == "a" && m.Offset == 0 {
						<-first.done()
					}
				})
				r := newRig(t, rec, func(c *testConfig) { c.Concurrency, c.MaxInFlight = 1, 2*backlog })
				r.atCleanup(first.open)
				ca := r.claim("t", 0)
				admitKey(t, ca, "a", backlog)
				synctest.Wait() // a@0 runs, the rest of a's backlog waits behind it
				if runs := rec.snapshot(); len(runs) != 1 || runs[0].offset != 0 {
					t.Fatalf("want a@0 alone running, got %v", runs)
				}
				cb := ca
				if otherTopic != ca.p.topic {
					cb = r.claim(otherTopic, 0)
				}
				admitKey(t, cb, "b", 1)
				first.open()
				synctest.Wait()

				runs := rec.snapshot()
				if len(runs) != backlog+1 {
					t.Fatalf("ran %d messages, want %d", len(runs), backlog+1)
				}
				pos := slices.IndexFunc(runs, func(x handled) bool { return x.key == "b" })
				// b arrived while a@0 ran: it waits for at most maxInlineRun
				// of a's messages run back to back, not for a's backlog.
				if pos < 1 || pos > maxInlineRun {
					t.Fatalf("b ran %dth of %d, want within the first %d of a's messages it arrived behind", pos, len(runs), maxInlineRun)
				}
				var as []int64
				for _, x := range runs {
					if x.key == "a" {
						as = append(as, x.offset)
					}
				}
				for i, o := range as {
					if o != int64(i) {
						t.Fatalf("a's backlog out of order: %v", as)
					}
				}
				rec.checkOncePerOffsetInKeyOrder(t, "t", ca.claim.next.Load())
				if cb != ca {
					rec.checkOncePerOffsetInKeyOrder(t, cb.p.topic, 1)
					r.shutdown(t, ca, cb)
					return
				}
				r.shutdown(t, ca)
			})
		})
	}
}

// With nothing else waiting, a key's next message runs on the goroutine
// that finished the previous one without a trip through the queue: it
// starts while the test holds the queue's lock, which push and pop need.
//
// Not in a synctest bubble: a goroutine blocked on a mutex is not durably
// blocked, so if the next message did go through the queue, a bubble would
// hang instead of failing. The timeout bounds only that failure.
func TestPoolRunsNextOfKeyInline(t *testing.T) {
	const n = 10
	release := newLatch()
	firstStarted, secondStarted, lastDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rec := newRecorder(func(_ context.Context, m *handler.Message) {
		switch m.Offset {
		case 0:
			close(firstStarted)
			<-release.done()
		case 1:
			close(secondStarted)
		case n - 1:
			close(lastDone)
		}
	})
	// Two goroutines: an idle one could take the next message if it were
	// queued.
	r := newRig(t, rec, func(c *testConfig) { c.Concurrency, c.MaxInFlight = 2, n })
	r.atCleanup(release.open)
	c := r.claim("t", 0)
	admitKey(t, c, "a", n)
	<-firstStarted

	r.pool.mu.Lock()
	release.open()
	select {
	case <-secondStarted:
	case <-time.After(5 * time.Second):
		r.pool.mu.Unlock()
		t.Fatal("a@1 did not start while the pool's queue was locked: it went through the queue")
	}
	r.pool.mu.Unlock()
	<-lastDone
	r.shutdown(t, c)

	runs := rec.snapshot()
	rec.checkOncePerOffsetInKeyOrder(t, "t", n)
	for _, x := range runs {
		if x.gid != runs[0].gid {
			t.Fatalf("a@%d ran on goroutine %d, a@0 on %d: want one goroutine for the whole chain", x.offset, x.gid, runs[0].gid)
		}
	}
}

// stop reports true as soon as every goroutine has exited and false after
// its grace when a handler ignores its cancelled context; tasks not yet
// started are dropped.
func TestPoolStop(t *testing.T) {
	const grace = time.Second

	t.Run("idle goroutines exit at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := NewPool(3)
			start := time.Now()
			if !p.Stop(grace) {
				t.Fatal("idle pool: stop reported goroutines still running")
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("idle pool: stop took %v, want no wait", d)
			}
		})
	})

	t.Run("waits for a running handler within grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const took = 300 * time.Millisecond
			rec := newRecorder(func(context.Context, *handler.Message) { time.Sleep(took) })
			r := newRig(t, rec, func(c *testConfig) { c.Concurrency = 2 })
			c := r.claim("t", 0)
			admitKey(t, c, "a", 1)
			synctest.Wait()
			start := time.Now()
			if !r.pool.Stop(grace) {
				t.Fatal("the handler finished within grace, yet stop reported it running")
			}
			if d := time.Since(start); d != took {
				t.Fatalf("stop returned after %v, want when the handler finished (%v)", d, took)
			}
			if c.p.state.Snapshot().Marked != 1 {
				t.Fatalf("the running handler's result must count: marked %d, want 1", c.p.state.Snapshot().Marked)
			}
			c.p.drain(0)
		})
	})

	t.Run("handler returning on cancellation", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const drainTimeout = 200 * time.Millisecond
			rec := newRecorder(func(ctx context.Context, _ *handler.Message) { <-ctx.Done() })
			r := newRig(t, rec, func(c *testConfig) { c.Concurrency = 2 })
			c := r.claim("t", 0)
			admitKey(t, c, "a", 1)
			synctest.Wait()
			if n := c.p.drain(drainTimeout); n != 1 {
				t.Fatalf("drain: %d handlers abandoned, want 1", n)
			}
			start := time.Now()
			if !r.pool.Stop(grace) {
				t.Fatal("the handler returned on cancellation, yet stop reported it running")
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("stop waited %v for a handler that returned on cancellation", d)
			}
		})
	})

	t.Run("handler ignoring cancellation", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const drainTimeout = 200 * time.Millisecond
			stuck := newLatch()
			rec := newRecorder(func(_ context.Context, m *handler.Message) {
				if string(m.Key) == "a" {
					<-stuck.done()
				}
			})
			r := newRig(t, rec, func(c *testConfig) { c.Concurrency = 1 })
			r.atCleanup(stuck.open)
			c := r.claim("t", 0)
			admitKey(t, c, "a", 1)
			admitKey(t, c, "b", 1) // queued behind a: one goroutine
			synctest.Wait()
			if n := c.p.drain(drainTimeout); n != 1 {
				t.Fatalf("drain: %d handlers abandoned, want 1", n)
			}
			start := time.Now()
			if r.pool.Stop(grace) {
				t.Fatal("a handler ignores its cancelled context, yet stop reported every goroutine gone")
			}
			if d := time.Since(start); d != grace {
				t.Fatalf("stop gave up after %v, want its grace (%v)", d, grace)
			}

			// The stuck handler returns at last: its goroutine exits (the
			// bubble would report it otherwise), its result is discarded
			// and the queued b never runs.
			stuck.open()
			r.pool.wg.Wait()
			synctest.Wait()
			if runs := rec.snapshot(); len(runs) != 1 || runs[0].key != "a" {
				t.Fatalf("only a may have run, got %v", runs)
			}
			if c.p.state.Snapshot().Marked != 0 {
				t.Fatalf("a's result came after the fence and must be discarded: marked %d, want 0", c.p.state.Snapshot().Marked)
			}
		})
	})
	// Without a drain (the partition keeps running, so only the pool can
	// hold them back), tasks queued when stop is called never start.
	t.Run("queued tasks are dropped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stuck := newLatch()
			rec := newRecorder(func(_ context.Context, m *handler.Message) {
				if string(m.Key) == "a" {
					<-stuck.done()
				}
			})
			r := newRig(t, rec, func(c *testConfig) { c.Concurrency = 1 })
			r.atCleanup(stuck.open)
			c := r.claim("t", 0)
			admitKey(t, c, "a", 1)
			admitKey(t, c, "b", 1)
			admitKey(t, c, "c", 1)
			synctest.Wait()
			if r.pool.Stop(grace) {
				t.Fatal("a is still running, yet stop reported every goroutine gone")
			}
			stuck.open()
			r.pool.wg.Wait()
			if runs := rec.snapshot(); len(runs) != 1 || runs[0].key != "a" {
				t.Fatalf("b and c were queued when stop was called: only a may run, got %v", runs)
			}
			// a's completion is held back for a batch (b and c are still
			// unfinished); the drain hands it to the commit state before the
			// final commit.
			c.p.drain(0)
			if c.p.state.Snapshot().Marked != 1 {
				t.Fatalf("a finished with the partition running: want it marked (1) by the final commit, got %d", c.p.state.Snapshot().Marked)
			}
		})
	})
}

// admitKeys admits one message of each key into c's partition as one batch
// (one pushAll), and fails unless all fit.
func admitKeys(t *testing.T, c *claimed, n int) {
	t.Helper()
	ms := make([]*sarama.ConsumerMessage, n)
	for i := range ms {
		ms[i] = c.claim.message(fmt.Sprintf("k%d", i))
	}
	if got, _ := c.p.admit(ms); got != n {
		t.Fatalf("admitted %d of %d", got, n)
	}
}

// A batch wakes at most wakeAtOnce idle goroutines; when their handlers
// block, the nudge wakes one for every waiting message within two
// nudgeAfter periods, so blocking handlers still get the pool's whole
// concurrency.
func TestPoolBlockingBatchReachesFullConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const batch = 20
		release := newLatch()
		var running atomic.Int32
		rec := newRecorder(func(context.Context, *handler.Message) {
			running.Add(1)
			<-release.done()
		})
		r := newRig(t, rec, func(c *testConfig) { c.Concurrency, c.MaxInFlight = 32, batch })
		r.pool.wakeAtOnce = 2
		r.atCleanup(release.open)
		c := r.claim("t", 0)
		synctest.Wait() // every pool goroutine idle
		admitKeys(t, c, batch)
		synctest.Wait()
		if n := running.Load(); n != 2 {
			t.Fatalf("%d handlers started at once, want wakeAtOnce = 2", n)
		}
		time.Sleep(2 * nudgeAfter)
		synctest.Wait()
		if n := running.Load(); n != batch {
			t.Fatalf("%d handlers running after 2×nudgeAfter with blocked handlers, want all %d", n, batch)
		}
		release.open()
		synctest.Wait()
		rec.checkOncePerOffsetInKeyOrder(t, "t", batch)
		r.shutdown(t, c)
	})
}

// With handlers that return at once, the goroutines a batch woke run the
// whole batch: no goroutine is woken per message, which would cost a park
// and a wake-up each. (Each handler yields, so that any other goroutine
// woken would get to take messages.)
func TestPoolShortHandlersDoNotWakeEveryGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const batch = 200
		rec := newRecorder(func(context.Context, *handler.Message) { runtime.Gosched() })
		r := newRig(t, rec, func(c *testConfig) { c.Concurrency, c.MaxInFlight = 32, batch })
		r.pool.wakeAtOnce = 2
		c := r.claim("t", 0)
		synctest.Wait() // every pool goroutine idle
		admitKeys(t, c, batch)
		synctest.Wait()
		runs := rec.snapshot()
		if len(runs) != batch {
			t.Fatalf("ran %d messages, want %d", len(runs), batch)
		}
		gids := map[uint64]bool{}
		for _, x := range runs {
			gids[x.gid] = true
		}
		if len(gids) > 2 {
			t.Fatalf("%d goroutines ran a batch of short handlers, want at most wakeAtOnce = 2", len(gids))
		}
		r.shutdown(t, c)
	})
}
