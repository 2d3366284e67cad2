package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/txn"
)

// A full group (group.max.size) stops the worker with a hint; with lazy
// retry tiers the hint says that each instance counts twice while the
// tiers hold work, since their member is a second one.
func TestGroupMaxSizeHintCountsTheTierMember(t *testing.T) {
	err := fmt.Errorf("join: %w", sarama.ErrGroupMaxSizeReached)
	worker := func(cfg Config, opts ...Option) *Worker {
		cfg.Brokers, cfg.GroupID, cfg.Topics = []string{"127.0.0.1:9092"}, "g", []string{"t"} // New only validates
		w, err := New(cfg, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }),
			append(opts, WithRegisterer(prometheus.NewRegistry()))...)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	f := worker(DefaultConfig()).fatal(err, nil)
	if f == nil || !strings.Contains(f.Hint, "group.max.size") || !strings.Contains(f.Hint, "twice the instances") {
		t.Fatalf("hint with the default tiers and strategy: %+v, want group.max.size and that each instance counts twice", f)
	}
	noTiers := DefaultConfig()
	noTiers.RetryTopicDelays = nil
	if f := worker(noTiers).fatal(err, nil); f == nil || strings.Contains(f.Hint, "twice") {
		t.Fatalf("hint without retry tiers: %+v, want no word of a second member", f)
	}
	eager := worker(DefaultConfig(), WithSaramaConfig(func(c *sarama.Config) {
		c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	}))
	if f := eager.fatal(err, nil); f == nil || strings.Contains(f.Hint, "twice") {
		t.Fatalf("hint with an eager strategy set through WithSaramaConfig: %+v, want no word of a second member (the tiers stay in the one member)", f)
	}
}

// A transactional producer that cannot go on names each way it gets
// there: a duplicate instance id, a missing ACL, or the broker aborting
// the transaction on its timeout.
func TestTxnFatalHintNamesTheTimeout(t *testing.T) {
	w := &Worker{cfg: DefaultConfig()}
	w.cfg.GroupID, w.cfg.InstanceID = "billing", "pod-0"
	f := w.txnFatal(&txn.FatalError{Err: sarama.ErrProducerFenced})
	for _, want := range []string{`KAFKA_INSTANCE_ID="pod-0"`, "kafkaworker.billing.*", "on its timeout (10s", "WORKER_COMMIT_INTERVAL"} {
		if !strings.Contains(f.Hint, want) {
			t.Errorf("hint %q does not say %q", f.Hint, want)
		}
	}
}
