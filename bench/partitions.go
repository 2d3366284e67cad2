package main

import (
	"context"
	"fmt"
)

// partitions is the noop scenario on 256 partitions: what a partition
// costs each side, in throughput and in memory. Every consumer runs in a
// child process as in noop. Besides raw sarama and the worker as by default
// (which also consumes its retry tiers, 3 × 256 more partitions, though
// with cooperative-sticky only while they hold work, never here), the worker
// without retry topics shows how much of the difference those are.
//
// With 256 partitions the first fetch brings in most of the topic, before
// the first message is handled, so the hot-path window of noop would leave
// most of the work out. Rates here run from the session start (the group
// joined: raw sarama's Setup, the worker's "joined consumer group") to the
// last message: the first fetch, the decoding and the worker's per-partition
// set-up are in, connecting and the group join (timed separately) are not.
func (b *bench) partitions(ctx context.Context) (table, error) {
	const partitions, keys, concurrency = 256, 10_000, 64
	n, reps := 1_000_000, b.repsFor(3)
	if b.quick {
		n = 256_000
	}
	topic, err := b.keyedTopic(ctx, partitions, n, keys)
	if err != nil {
		return table{}, err
	}
	variants := []variant{rawVariant, workerVariant, noRetryVariant}
	runs, err := b.alternateChildren(ctx, "partitions", topic, n, concurrency, reps, variants...)
	if err != nil {
		return table{}, err
	}
	from, fromName := snapJoined, "session start"
	joined := haveJoined(runs...)
	if !joined {
		// The worker's join is seen through its log; should the message
		// change, fall back on the whole run.
		from, fromName = snapStart, "Run/Consume called"
	}
	retryTiers := len(benchWorkerConfig(concurrency, false).RetryTopicDelays)
	consumed := []int{partitions, partitions * (1 + retryTiers), partitions}

	header := []string{"metric"}
	for _, v := range variants {
		header = append(header, v.name)
	}
	header = append(header, "kafkaworker / raw", "no retry topics / raw")
	// row is a metric's medians per variant; mark, if set, formats the
	// worker's ratio to raw (ratio, or a target from the issue the
	// figure answers) and the no-retry variant's plain.
	row := func(name string, f func(measurement) float64, format func(float64) string, mark func(float64) string) []string {
		r := []string{name}
		var med []float64
		for _, ms := range runs {
			v := medianOf(ms, f)
			med = append(med, v)
			r = append(r, format(v))
		}
		if mark != nil {
			return append(r, mark(div(med[1], med[0])), ratio(div(med[2], med[0])))
		}
		return append(r, "", "")
	}
	us := func(v float64) string { return micros(secs(v)) }
	seconds := func(v float64) string { return dur(secs(v)) }
	t := table{
		title: fmt.Sprintf("Many partitions: no-op handler, %s msgs × 100 B over %d partitions (~%s each), %s keys, each consumer alone in a child process (median of %d alternating runs each)",
			count(n), partitions, count(n/partitions), count(keys), reps),
		header: header,
		rows: [][]string{
			{"partitions consumed", fmt.Sprint(consumed[0]), fmt.Sprintf("%d (%d source + %d × %d retry tiers; the tiers claimed only while they hold work, so %d here)", consumed[1], partitions, retryTiers, partitions, partitions), fmt.Sprint(consumed[2]), "", ""},
			row(fmt.Sprintf("**msgs/s** (%s → last handled)", fromName), in(from, window.rate), rate, func(v float64) string { return atLeast(v, 0.9) }),
			{"per-run msgs/s", windowRates(runs[0], from), windowRates(runs[1], from), windowRates(runs[2], from), "", ""},
			row("msgs/s, whole run (Run/Consume called → last handled)", in(snapStart, window.rate), rate, ratio),
		},
	}
	if joined {
		t.rows = append(t.rows,
			row("Run/Consume called → session start (connect, join)", sinceAt(snapJoined), seconds, ratio),
			row("session start → first message (offsets, first fetch, set-up)", func(m measurement) float64 {
				return (m.snaps[snapFirst].at - m.snaps[snapJoined].at).Seconds()
			}, seconds, ratio))
	} else {
		t.rows = append(t.rows, row("Run/Consume called → first message", sinceAt(snapFirst), seconds, ratio))
		t.notes = append(t.notes, "The worker's session start was not seen (its \"joined consumer group\" log record is what tells it), so rates run from the Run/Consume call.")
	}
	t.rows = append(t.rows,
		row(fmt.Sprintf("**consumer CPU per message** (%s → last)", fromName), in(from, window.cpuPerMsg), us, func(v float64) string { return atMost(v, 1.3) }),
		row(fmt.Sprintf("allocations per message (%s → last)", fromName), in(from, window.allocsPerMsg), func(v float64) string { return fmt.Sprintf("%.2f", v) }, ratio),
		row(fmt.Sprintf("broker CPU per message (%s → last)", fromName), in(from, window.brokerPerMsg), us, ratio),
		row("**consumer peak RSS (VmHWM)**", byHWM, func(v float64) string { return mib(int64(v)) }, ratio))
	t.notes = append([]string{
		fmt.Sprintf("Measured as in the no-op table (a child process per consumer, the same settings), with %d partitions instead of 8. "+
			"Rates run from the session start (raw sarama's Setup; the worker's Setup, seen through its \"joined consumer group\" log record) to the last message: "+
			"with %d partitions the first fetch brings in most of the topic before any message is handled, so a window from the first message would leave most of the work out.",
			partitions, partitions),
		fmt.Sprintf("Every partition holds ~%s, less than sarama's 1 MiB fetch per partition, so on both sides the peak RSS is mostly what sarama fetched and decoded for every partition at once, plus, for the worker, what it holds (up to %d messages in flight per partition).",
			mib(int64(n/partitions*100/1024)), benchWorkerConfig(concurrency, false).MaxInFlight),
	}, t.notes...)
	if b.noopHWM != nil {
		r := []string{fmt.Sprintf("peak RSS added per source partition, over the no-op table's (8 partitions, %s msgs)", count(b.noopSizes()))}
		for i, v := range variants[:2] {
			r = append(r, fmt.Sprintf("%.0f KiB", (medianOf(runs[i], byHWM)-b.noopHWM[v.tag])/float64(partitions-8)))
		}
		t.rows = append(t.rows, append(r, "—", "", ""))
		t.notes = append(t.notes, "Peak RSS added per source partition: (peak RSS here − peak RSS in the no-op table) / 248; for the worker each source partition would bring its retry tiers' partitions along, were they claimed (they hold no work here, so they are not).")
	}
	t.notes = append(t.notes, settingsNotes(concurrency, true)...)
	return t, nil
}
