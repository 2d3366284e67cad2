package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kafkaworker/kafkaworker/worker"
)

// rssResult is what one child run measured.
type rssResult struct {
	side    string
	backlog int
	hwm     int64 // VmHWM, kB
	rss     int64 // VmRSS just before SIGTERM, kB
	handled int64 // messages the child handled in the window
	live    int64 // largest live heap after a GC the child saw, bytes
}

// rss measures the peak RSS of a worker, in a child process so nothing of
// the parent (broker, produced data) counts, consuming with a slow handler
// from an empty topic, a 100k and a 1M message backlog. The worker takes at
// most WORKER_MAX_IN_FLIGHT messages per partition from Kafka and pauses the
// partition beyond that, so its memory should not grow with the backlog;
// raw sarama (one message at a time per partition, its own channel buffers)
// is measured the same way for reference.
func (b *bench) rss(ctx context.Context) (table, error) {
	const partitions, keys, concurrency = 8, 1000, 64
	const sleep = time.Millisecond
	small, large, window := 100_000, 1_000_000, 5*time.Second
	if b.quick {
		small, large, window = 100_000, 1_000_000, 2*time.Second
	}
	backlogs := []int{0, small, large}
	topics := map[int]string{}
	for _, n := range backlogs {
		if n == 0 {
			topic := b.name("empty")
			if err := b.cluster.CreateTopic(ctx, topic, partitions); err != nil {
				return table{}, err
			}
			topics[0] = topic
			continue
		}
		topic, err := b.keyedTopic(ctx, partitions, n, keys)
		if err != nil {
			return table{}, err
		}
		topics[n] = topic
	}

	t := table{
		title: fmt.Sprintf("Peak RSS of a child process, handler sleeping %s, %d partitions, %s window per run",
			sleep, partitions, window),
		header: []string{"consumer", "backlog", "handled in window", "**peak RSS (VmHWM)**", "RSS at end", "peak live heap", "peak RSS vs empty topic"},
		notes: []string{
			fmt.Sprintf("kafkaworker: key mode, concurrency %d, WORKER_MAX_IN_FLIGHT %d per partition (the default); raw sarama: one message at a time per partition.",
				concurrency, worker.DefaultConfig().MaxInFlight),
			"Each child is the bench binary re-executed in child mode, pointed at the parent's embedded broker through KAFKA_BROKERS; it is stopped with SIGTERM after the window.",
			"Peak live heap is the largest heap left after a GC (runtime/metrics /gc/heap/live:bytes, sampled every 50 ms by the child): what the consumer really holds, without the GC's headroom (GOGC=100 lets the heap grow to twice that before collecting).",
			"Messages are 100 B of random (incompressible) bytes; sarama fetches up to 1 MiB per partition per request and buffers 256 messages per partition channel on both sides.",
		},
	}
	var growth []string
	for _, side := range []string{"worker", "raw"} {
		var base int64
		hwm := map[int]int64{}
		for _, n := range backlogs {
			r, err := b.rssChild(ctx, side, topics[n], concurrency, sleep, window)
			if err != nil {
				return table{}, err
			}
			r.backlog = n
			if n == 0 {
				base = r.hwm
			}
			hwm[n] = r.hwm
			progress("rss %-6s backlog %9s: handled %s, VmHWM %s, VmRSS %s, peak live heap %s",
				side, count(n), count(int(r.handled)), mib(r.hwm), mib(r.rss), mib(r.live/1024))
			name := map[string]string{"worker": fmt.Sprintf("kafkaworker (c=%d)", concurrency), "raw": "raw sarama"}[side]
			t.rows = append(t.rows, []string{
				name, count(n), count(int(r.handled)), mib(r.hwm), mib(r.rss), liveHeap(r.live),
				fmt.Sprintf("%.2f×", float64(r.hwm)/float64(max(base, 1))),
			})
		}
		growth = append(growth, fmt.Sprintf("%s %.2f×", map[string]string{"worker": "kafkaworker", "raw": "raw sarama"}[side],
			float64(hwm[large])/float64(max(hwm[small], 1))))
	}
	t.notes = append([]string{fmt.Sprintf("**Peak RSS with a %s backlog over a %s one: %s** (a consumer that buffered the backlog would show about %d×).",
		count(large), count(small), strings.Join(growth, ", "), large/small)}, t.notes...)
	return t, nil
}

// rssChild runs one child consumer of topic for window and returns what it
// measured.
func (b *bench) rssChild(ctx context.Context, side, topic string, concurrency int, sleep, window time.Duration) (rssResult, error) {
	r, err := b.runChild(ctx, childSpec{
		side: side, group: b.name("rss-" + side), topic: topic, concurrency: concurrency, sleep: sleep, window: window,
	})
	if err != nil {
		return rssResult{}, err
	}
	return rssResult{side: side, hwm: r.hwm, rss: r.rss, handled: r.handled, live: r.live}, nil
}

// liveHeap formats a live heap size in bytes, which is 0 before the first GC.
func liveHeap(b int64) string {
	if b == 0 {
		return "n/a (no GC ran)"
	}
	return mib(b / 1024)
}

// mib formats a kB figure in MiB.
func mib(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }
