package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/retry"
	"github.com/kafkaworker/kafkaworker/worker"
)

// statusClient keeps no idle connections, so none outlives a test.
var statusClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

var servingAddr = regexp.MustCompile(`msg="serving /metrics[^"]*" addr=(\S+)`)

// startServed starts a worker serving its endpoints on a free loopback port
// and returns it with the base URL, read from its log.
func startServed(t *testing.T, cfg worker.Config, h handler.Handler) (*running, string) {
	t.Helper()
	cfg.MetricsAddr = "127.0.0.1:0"
	var logs testutil.Buffer
	r := start(t, cfg, h, worker.WithRegisterer(prometheus.NewRegistry()), worker.WithLogger(logs.TextLogger()))
	var base string
	testutil.WaitFor(t, 30*time.Second, "the endpoint server's address in the log", func() bool {
		if m := servingAddr.FindStringSubmatch(logs.String()); m != nil {
			base = "http://" + m[1]
		}
		return base != ""
	})
	return r, base
}

// fetchText GETs url and returns the body; 200 is required.
func fetchText(t *testing.T, url string) string {
	t.Helper()
	resp, err := statusClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, body)
	}
	return string(body)
}

// fetchStatus GETs and decodes /status.json.
func fetchStatus(t *testing.T, base string) worker.Status {
	t.Helper()
	var s worker.Status
	if err := json.Unmarshal([]byte(fetchText(t, base+"/status.json")), &s); err != nil {
		t.Fatalf("/status.json: %v", err)
	}
	return s
}

// partitionOf returns the status row of topic/partition, if listed.
func partitionOf(s worker.Status, topic string, p int32) (worker.PartitionStatus, bool) {
	for _, ps := range s.Partitions {
		if ps.Topic == topic && ps.Partition == p {
			return ps, true
		}
	}
	return worker.PartitionStatus{}, false
}

// statusScenario is the handler of the status tests: on the source topic,
// partition 0 gets five successes, one message failing once, one failing
// its two local attempts (to retry tier 1, due in an hour) and one
// permanent failure (to the dead-letter topic), all on one key so they run
// in that order; partition 1 gets one message that blocks until release.
type statusScenario struct {
	*stuckHandler
	flakyFailed bool
}

var (
	errFlaky = flakyError{"flaky: connection reset by peer"}
	errTier  = flakyError{"downstream unavailable"}
	errDLQ   = retry.Permanent(errors.New("cannot parse the order"))
)

func newStatusScenario(t *testing.T, b *testBundle) *statusScenario {
	t.Helper()
	var recs []kafkatest.Record
	for _, v := range []string{"payload-ok-0", "payload-ok-1", "payload-ok-2", "payload-ok-3", "payload-ok-4", "payload-flaky", "payload-tier", "payload-dlq"} {
		recs = append(recs, kafkatest.Record{Topic: b.topic, Partition: 0, Explicit: true, Key: []byte("key-a"), Value: []byte(v)})
	}
	recs = append(recs, kafkatest.Record{Topic: b.topic, Partition: 1, Explicit: true, Key: []byte("key-b"), Value: []byte("payload-stuck")})
	if _, err := b.cluster.Produce(ctx(t), recs...); err != nil {
		t.Fatal(err)
	}
	return &statusScenario{stuckHandler: newStuckHandler(func(m *handler.Message) bool { return string(m.Value) == "payload-stuck" })}
}

func (s *statusScenario) Handle(ctx context.Context, m *handler.Message) error {
	switch string(m.Value) {
	case "payload-flaky":
		s.mu.Lock()
		first := !s.flakyFailed
		s.flakyFailed = true
		s.mu.Unlock()
		if first {
			return errFlaky
		}
	case "payload-tier":
		return errTier
	case "payload-dlq":
		return errDLQ
	}
	return s.stuckHandler.Handle(ctx, m)
}

// statusConfig is the configuration of the status tests: one retry tier an
// hour away, the dead-letter topic, and WORKER_STUCK_AFTER at 500ms.
func statusConfig(b *testBundle) worker.Config {
	cfg := b.retryConfig(2, time.Hour)
	cfg.StuckAfter = 500 * time.Millisecond
	return cfg
}

// settled reports whether the scenario reached its steady state: partition
// 0 done and committed, the stuck message past WORKER_STUCK_AFTER, and the
// tiered message held by the tier.
func settled(s worker.Status, b *testBundle) bool {
	p0, ok0 := partitionOf(s, b.topic, 0)
	p1, ok1 := partitionOf(s, b.topic, 1)
	return ok0 && ok1 && len(s.Partitions) == 4 && p0.CommittedOffset != nil && *p0.CommittedOffset == 8 &&
		p1.Stuck && len(s.RetryTiers) == 1 && s.RetryTiers[0].Held == 1 && s.Throughput.Totals.Handled == 10
}

// /status.json shows exactly what the worker did: the delivery totals by
// outcome, every partition's offsets and held messages, the stuck message,
// the tier's waiting message and due time, the failures newest first with
// where each went; /status shows the same; no payload appears anywhere.
func TestStatusShowsExactState(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	h := newStatusScenario(t, b)
	began := time.Now()
	_, base := startServed(t, statusConfig(b), h)
	var s worker.Status
	testutil.WaitFor(t, 30*time.Second, "the scenario settled in /status.json", func() bool {
		s = fetchStatus(t, base)
		return settled(s, b)
	})
	checkTotals(t, s, worker.DeliveryCounts{Handled: 10, Success: 6, Error: 2, Retry: 1, DeadLetter: 1}, 10)
	checkPartitions(t, s, b)
	checkTier(t, s, b, began)
	checkFailures(t, s, b)
	if s.Worker.Group != b.group || s.Worker.MemberID == "" || s.Worker.Generation < 1 || !s.Worker.Ready || !s.Worker.Healthy ||
		s.Worker.StuckAfterSeconds != 0.5 {
		t.Errorf("worker %+v", s.Worker)
	}
	page := fetchText(t, base+"/status")
	for _, want := range []string{
		fmt.Sprintf(`<tr class="" data-topic="%s" data-partition="0"><td>%[1]s</td><td class="num">0</td><td class="num">8</td><td class="num">8</td><td class="num">0</td><td class="num">0</td><td class="num">0</td><td class="num">—</td>`, b.topic),
		fmt.Sprintf(`<tr class="stuck" data-topic="%s" data-partition="1">`, b.topic),
		`<b id="handled-total">10</b>`, s.Worker.MemberID, "retry tier 1 (" + b.tierTopic(1) + ")", "dead letter (" + b.dlqTopic() + ")",
		errFlaky.Error(), b.tierTopic(1),
	} {
		if !strings.Contains(page, want) {
			t.Errorf("/status lacks %s", want)
		}
	}
	for name, text := range map[string]string{"/status": page, "/status.json": fetchText(t, base+"/status.json")} {
		if strings.Contains(text, "payload-") || strings.Contains(text, "key-a") {
			t.Errorf("%s shows a message payload or key", name)
		}
	}

	close(h.release)
	testutil.WaitFor(t, 30*time.Second, "the stuck message done in /status.json", func() bool {
		s = fetchStatus(t, base)
		p1, ok := partitionOf(s, b.topic, 1)
		return ok && p1.CommittedOffset != nil && *p1.CommittedOffset == 1 && p1.Held == 0 && !p1.Stuck
	})
	checkTotals(t, s, worker.DeliveryCounts{Handled: 11, Success: 7, Error: 2, Retry: 1, DeadLetter: 1}, 10)
}

func checkTotals(t *testing.T, s worker.Status, want worker.DeliveryCounts, consumed uint64) {
	t.Helper()
	if s.Throughput.Totals != want || s.Throughput.Consumed != consumed || s.Throughput.WindowSeconds != 300 {
		t.Errorf("throughput totals %+v consumed %d window %d, want %+v consumed %d window 300",
			s.Throughput.Totals, s.Throughput.Consumed, s.Throughput.WindowSeconds, want, consumed)
	}
}

func checkPartitions(t *testing.T, s worker.Status, b *testBundle) {
	t.Helper()
	p0, _ := partitionOf(s, b.topic, 0)
	if p0.EndOffset != 8 || p0.Lag != 0 || p0.Held != 0 || p0.InFlight != 0 || p0.OldestOffset != nil || p0.Stuck || p0.Tier != 0 {
		t.Errorf("partition 0: %+v", p0)
	}
	p1, _ := partitionOf(s, b.topic, 1)
	if p1.CommittedOffset == nil || *p1.CommittedOffset != 0 || p1.EndOffset != 1 || p1.Lag != 1 || p1.Held != 1 || p1.InFlight != 1 ||
		p1.OldestOffset == nil || *p1.OldestOffset != 0 || p1.OldestAgeSeconds < 0.5 || p1.Paused {
		t.Errorf("partition 1 (stuck): %+v", p1)
	}
	for _, p := range []int32{0, 1} {
		if tp, ok := partitionOf(s, b.tierTopic(1), p); !ok || tp.Tier != 1 {
			t.Errorf("tier partition %d: %+v listed %v", p, tp, ok)
		}
	}
}

func checkTier(t *testing.T, s worker.Status, b *testBundle, began time.Time) {
	t.Helper()
	tier := s.RetryTiers[0]
	if tier.Source != b.topic || tier.Tier != 1 || tier.Topic != b.tierTopic(1) || tier.DelaySeconds != 3600 ||
		tier.AssignedPartitions != 2 || tier.Waiting != 1 || tier.Held != 1 || tier.NextDue == nil {
		t.Fatalf("retry tier %+v", tier)
	}
	// Due an hour after the failure, to the millisecond Kafka timestamps carry.
	if lo, hi := began.Add(time.Hour-time.Second), time.Now().Add(time.Hour+time.Second); tier.NextDue.Before(lo) || tier.NextDue.After(hi) {
		t.Errorf("next due %v, want between %v and %v", tier.NextDue, lo, hi)
	}
	var holding int
	for _, p := range []int32{0, 1} {
		if tp, _ := partitionOf(s, b.tierTopic(1), p); tp.Held == 1 {
			holding++
			if tp.NextDue == nil || !tp.NextDue.Equal(*tier.NextDue) || tp.Lag != 1 || tp.EndOffset != 1 || tp.InFlight != 0 {
				t.Errorf("tier partition holding the message: %+v", tp)
			}
		}
	}
	if holding != 1 {
		t.Errorf("%d tier partitions hold a message, want 1", holding)
	}
}

func checkFailures(t *testing.T, s worker.Status, b *testBundle) {
	t.Helper()
	want := []worker.FailureStatus{ // newest first
		{Offset: 7, Attempt: 1, ErrorType: handler.ErrorType(errDLQ), Error: errDLQ.Error(), Destination: worker.DestinationDeadLetter, DestinationTopic: b.dlqTopic()},
		{Offset: 6, Attempt: 2, ErrorType: handler.ErrorType(errTier), Error: errTier.Error(), Destination: worker.DestinationRetryTier, Tier: 1, DestinationTopic: b.tierTopic(1)},
		{Offset: 6, Attempt: 1, ErrorType: handler.ErrorType(errTier), Error: errTier.Error(), Destination: worker.DestinationInPlace},
		{Offset: 5, Attempt: 1, ErrorType: handler.ErrorType(errFlaky), Error: errFlaky.Error(), Destination: worker.DestinationInPlace},
	}
	if len(s.Failures) != len(want) {
		t.Fatalf("%d failures, want %d: %+v", len(s.Failures), len(want), s.Failures)
	}
	for i, f := range s.Failures {
		w := want[i]
		w.Time, w.Topic, w.Partition = f.Time, b.topic, 0
		if f != w || f.Time.IsZero() {
			t.Errorf("failure %d:\n got %+v\nwant %+v", i, f, w)
		}
	}
}

// A partition released in a rebalance leaves the status of the member that
// gave it up, in JSON and HTML, and shows on the member that took it.
func TestStatusDropsReleasedPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	h := newStatusScenario(t, b)
	close(h.release) // nothing stuck here
	_, base1 := startServed(t, statusConfig(b), h)
	testutil.WaitFor(t, 30*time.Second, "four partitions on the first member", func() bool { return len(fetchStatus(t, base1).Partitions) == 4 })
	_, base2 := startServed(t, statusConfig(b), h)
	var s1, s2 worker.Status
	testutil.WaitFor(t, 45*time.Second, "the partitions split between the members", func() bool {
		s1, s2 = fetchStatus(t, base1), fetchStatus(t, base2)
		return len(s1.Partitions) < 4 && len(s2.Partitions) > 0 && len(s1.Partitions)+len(s2.Partitions) == 4
	})
	page1 := fetchText(t, base1+"/status")
	for _, p := range s2.Partitions {
		if _, ok := partitionOf(s1, p.Topic, p.Partition); ok {
			t.Errorf("%s/%d listed by both members", p.Topic, p.Partition)
		}
		if row := fmt.Sprintf(`data-topic="%s" data-partition="%d"`, p.Topic, p.Partition); strings.Contains(page1, row) {
			t.Errorf("the first member's page still lists released %s/%d", p.Topic, p.Partition)
		}
	}
}
