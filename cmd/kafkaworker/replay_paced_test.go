package main

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

// produceHas reports whether a Produce request to topic carries a record
// whose bytes contain s (the records are not compressed).
func produceHas(req *kmsg.ProduceRequest, topic, s string) bool {
	for _, rt := range req.Topics {
		if rt.Topic != topic {
			continue
		}
		for _, rp := range rt.Partitions {
			if bytes.Contains(rp.Records, []byte(s)) {
				return true
			}
		}
	}
	return false
}

// failProduce answers req with MESSAGE_TOO_LARGE on every partition: an
// error the transactional producer recovers from by aborting.
func failProduce(req *kmsg.ProduceRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = kerr.MessageTooLarge.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// A paced replay (--rate) sends each record at once. When that send fails,
// the batch is sent again in a new transaction and committed: the record
// just added must be covered by the replay group's offset committed with
// it, or a run killed before the next commit (SIGKILL, a lost machine)
// would be resumed from below it, and the dead letter replayed twice. The
// test stalls the run right after that commit (the next record's produce
// sleeps), checks the group's offset, then runs the replay again, which
// fences the stalled run as a re-run after a SIGKILL does.
func TestReplayPacedRetryCommitsItsRecordWithItsProgress(t *testing.T) {
	e := newEnv(t)
	const n = 12
	deadLetters(t, e, n)

	// 0: fail the first send of v-05; 1: wait for the retry transaction's
	// commit; 2: stall the next send (the next paced record); 3: pass all.
	var phase atomic.Int32
	stalled := make(chan struct{})
	release := make(chan struct{})
	fake := e.cluster.Fake()
	fake.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		switch phase.Load() {
		case 0:
			if produceHas(req, "orders", "v-05") {
				phase.Store(1)
				return failProduce(req), nil, true
			}
		case 2:
			if req.TransactionID != nil {
				phase.Store(3)
				close(stalled)
				fake.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	fake.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if kreq.(*kmsg.EndTxnRequest).Commit && phase.Load() == 1 {
			phase.Store(2) // the retried batch commits (once this returns)
		}
		return nil, nil, false
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	args := []string{"dlq", "replay", "--dlq-topic", "orders.g.dlq", "--brokers", strings.Join(e.cluster.Addrs(), ",")}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var outA, errA testutil.Buffer
	doneA := make(chan int, 1)
	go func() { doneA <- run(ctx, append(args, "--rate", "4/s"), strings.NewReader(""), &outA, &errA) }()

	select {
	case <-stalled:
	case code := <-doneA:
		t.Fatalf("the paced replay ended (exit %d) before the fault was exercised: %s %s", code, outA.String(), errA.String())
	case <-time.After(60 * time.Second):
		t.Fatal("the paced replay never sent a record after the retried batch")
	}

	// Where v-05 is in the dead-letter topic.
	var p int32
	var off int64 = -1
	for _, r := range e.readTopic("orders.g.dlq", false) {
		if string(r.Value) == "v-05" {
			p, off = r.Partition, r.Offset
		}
	}
	if off < 0 {
		t.Fatal("v-05 not found in orders.g.dlq")
	}
	committed, err := e.cluster.CommittedOffsets(e.ctx, "kafkaworker-replay.orders.g.dlq", "orders.g.dlq")
	if err != nil {
		t.Fatal(err)
	}
	counts := values(e.readTopic("orders", true))
	t.Logf("stalled: v-05 is orders.g.dlq/%d@%d; replay group at %v; v-05 committed in orders %d time(s)", p, off, committed, counts["v-05"])
	if counts["v-05"] == 1 && committed[p] <= off {
		t.Errorf("v-05's replayed record is committed, but the replay group's offset on orders.g.dlq/%d is %d, not past v-05 (%d): a run killed now replays it again",
			p, committed[p], off)
	}

	// The re-run after a kill: it fences the stalled run (aborting its open
	// transaction) and resumes from the group's offset.
	e.ok(args[:len(args)-2]...)
	close(release)
	select {
	case <-doneA:
	case <-time.After(60 * time.Second):
		t.Fatal("the fenced replay did not end")
	}
	checkExactlyOnce(t, e, n)
}
