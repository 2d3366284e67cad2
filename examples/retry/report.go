package main

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// report collects, from inside the handler, where each payment was handled
// successfully.
type report struct {
	mu sync.Mutex
	ok map[string][]success // by key; more than one would be a duplicate
}

type success struct {
	topic   string
	attempt int
}

func newReport() *report { return &report{ok: map[string][]success{}} }

func (r *report) handled(key, topic string, attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ok[key] = append(r.ok[key], success{topic, attempt})
}

// finished counts the payments that were handled or are in dlq.
func (r *report) finished(dlq []kafkatest.ReadRecord) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range plans {
		if len(r.ok[p.key]) > 0 || slices.ContainsFunc(dlq, func(d kafkatest.ReadRecord) bool { return string(d.Key) == p.key }) {
			n++
		}
	}
	return n
}

// summarize prints where each payment ended and verifies that each ended
// exactly once, as planned, and that the group committed the source topic
// and every retry tier up to its end. Call it after Run has returned.
func (r *report) summarize(ctx context.Context, cluster *kafkatest.Cluster, cfg worker.Config, t topics,
	dlq []kafkatest.ReadRecord, reg *prometheus.Registry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	dead := map[string][]retry.Info{}
	for _, d := range dlq {
		info, ok := retry.ReadInfo(headers(d.Headers))
		if !ok {
			fail("dead-letter record at %d/%d has no kw-* headers", d.Partition, d.Offset)
		}
		dead[string(d.Key)] = append(dead[string(d.Key)], info)
	}

	fmt.Printf("\n%-11s %-26s %s\n", "PAYMENT", "PLAN", "WHERE IT ENDED")
	hopTopics := append([]string{t.source}, t.tiers...)
	for _, p := range plans {
		oks, ds := r.ok[p.key], dead[p.key]
		// Where the plan says it ends: delivery n is consumed from hop
		// (n-1)/RetryLocalAttempts; a failure after the last tier, or a
		// permanent one, is dead-lettered.
		wantTopic, wantAttempt := "", p.succeedOn
		switch {
		case p.permanent:
			wantAttempt = 1
		case p.succeedOn == 0 || (p.succeedOn-1)/cfg.RetryLocalAttempts >= len(hopTopics):
			wantAttempt = cfg.RetryLocalAttempts * len(hopTopics)
		default:
			wantTopic = hopTopics[(p.succeedOn-1)/cfg.RetryLocalAttempts]
		}

		for _, s := range oks {
			fmt.Printf("%-11s %-26s handled on attempt %d from %s\n", p.key, p.what, s.attempt, s.topic)
			if s.topic != wantTopic || s.attempt != wantAttempt {
				fail("%s: handled on attempt %d from %q; the plan says attempt %d from %q", p.key, s.attempt, s.topic, wantAttempt, wantTopic)
			}
		}
		for _, d := range ds {
			fmt.Printf("%-11s %-26s dead-lettered: kw-attempt=%d kw-error-type=%s kw-original-topic=%s\n%38s kw-error=%q\n",
				p.key, p.what, d.Attempt, d.ErrorType, d.OriginalTopic, "", d.Error)
			if wantTopic != "" || d.Attempt != wantAttempt || d.OriginalTopic != t.source {
				fail("%s: dead-lettered after attempt %d from %q; the plan says %s", p.key, d.Attempt, d.OriginalTopic, p.what)
			}
		}
		switch n := len(oks) + len(ds); {
		case n == 0:
			fmt.Printf("%-11s %-26s LOST: neither handled nor dead-lettered\n", p.key, p.what)
			fail("%s: neither handled nor dead-lettered", p.key)
		case n > 1:
			fail("%s: ended %d times (handled %d, dead-lettered %d); it must end exactly once", p.key, n, len(oks), len(ds))
		}
		delete(dead, p.key)
	}
	for key := range dead {
		fail("the dead-letter topic holds %q, which this program did not produce", key)
	}

	// What the worker's metrics counted: every delivery has one result.
	processed := map[string]map[string]int{} // topic -> result -> deliveries
	families, _ := reg.Gather()
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if f.GetName() == worker.MetricMessagesProcessed {
				if processed[labels["topic"]] == nil {
					processed[labels["topic"]] = map[string]int{}
				}
				processed[labels["topic"]][labels["result"]] += int(m.GetCounter().GetValue())
			}
		}
	}
	results := []string{"success", "error", "retry", "dead_letter"}
	fmt.Printf("\n%-30s %s\n%-30s", worker.MetricMessagesProcessed, "(deliveries by result)", "")
	for _, res := range results {
		fmt.Printf(" %11s", res)
	}
	fmt.Println()
	for _, topic := range hopTopics {
		fmt.Printf("%-30s", topic)
		for _, res := range results {
			fmt.Printf(" %11d", processed[topic][res])
		}
		fmt.Println()
	}

	// What the group committed, read through kafkatest's own client.
	fmt.Println()
	for _, topic := range hopTopics {
		end, err := cluster.EndOffsets(ctx, topic)
		if err != nil {
			return err
		}
		committed, err := cluster.CommittedOffsets(ctx, cfg.GroupID, topic)
		if err != nil {
			return err
		}
		var sumC, sumE int64
		for p, e := range end {
			c, ok := committed[p]
			if !ok {
				c = 0 // nothing committed: fine only if nothing is there
			}
			if c != e {
				fail("%s/%d: committed %d, end offset %d", topic, p, c, e)
			}
			sumC, sumE = sumC+c, sumE+e
		}
		fmt.Printf("%-30s committed %2d of %2d records\n", topic, sumC, sumE)
	}
	fmt.Printf("%-30s holds %d records (not consumed by the worker)\n", t.dlq, len(dlq))

	if len(problems) > 0 {
		fmt.Println()
		for _, p := range problems {
			fmt.Println("  -", p)
		}
		return fmt.Errorf("%d problem(s) above", len(problems))
	}
	fmt.Println("\nPASS: every payment ended exactly once, as planned; the source topic and both retry tiers are committed to their end")
	return nil
}

// headers turns kafkatest's header map into the handler's header list,
// which retry.ReadInfo reads.
func headers(m map[string]string) []handler.Header {
	out := make([]handler.Header, 0, len(m))
	for k, v := range m {
		out = append(out, handler.Header{Key: k, Value: []byte(v)})
	}
	return out
}
