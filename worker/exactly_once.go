package worker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/internal/txn"
)

// minTxnTimeout is the shortest transaction timeout the worker asks for:
// how long the broker keeps a dead worker's open transaction, and so how
// long read_committed readers of its output wait, when no restarted
// instance with the same KAFKA_INSTANCE_ID fences it sooner.
const minTxnTimeout = 10 * time.Second

// maxTxnCommitInterval is the longest commit interval exactly-once allows:
// three of them, the transaction timeout, stay within Kafka's default
// transaction.max.timeout.ms (15m).
const maxTxnCommitInterval = 5 * time.Minute

// transactionalID is the id the worker's transactions run under:
// kafkaworker.<group>.<instance>, where instance is KAFKA_INSTANCE_ID, so a
// restarted instance fences its predecessor's open transaction at once, or
// a random one per run without static membership.
func (c Config) transactionalID() string {
	instance := c.InstanceID
	if instance == "" {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		instance = hex.EncodeToString(b)
	}
	return "kafkaworker." + c.GroupID + "." + instance
}

// txnTimeout is how long a transaction may stay open: well above one
// commit interval.
func (c Config) txnTimeout() time.Duration { return max(minTxnTimeout, 3*c.CommitInterval) }

// startTxn starts the run's transactional producer with exactly-once on,
// and returns nil without it. Handler output is checked against c's
// metadata before it goes into a transaction (txn.Check).
func (w *Worker) startTxn(c *conns) (*txn.Txn, error) {
	if !w.cfg.ExactlyOnce {
		return nil, nil
	}
	id := w.cfg.transactionalID()
	metrics, err := telemetry.NewProducerMetrics(w.registerer)
	if err != nil {
		return nil, fmt.Errorf("kafkaworker: register the producer metrics: %w", err)
	}
	tx, err := txn.New(txn.Params{Brokers: w.cfg.Brokers, Sarama: w.sarama, ID: id, Timeout: w.cfg.txnTimeout(), Log: w.log, Metrics: metrics,
		Partitions: c.commitClient.Partitions, Refresh: c.commitClient.RefreshMetadata})
	if err != nil {
		return nil, err
	}
	w.log.Info("exactly-once: transactional producer ready", "transactional_id", id, "transaction_timeout", w.cfg.txnTimeout())
	return tx, nil
}

// txnFatal is the *FatalError of a transactional producer that cannot go
// on.
func (w *Worker) txnFatal(err error) *FatalError {
	hint := "the transaction was aborted; restart the worker"
	var f *txn.FatalError
	if errors.As(err, &f) {
		hint = fmt.Sprintf("another worker runs with this worker's transactional id (KAFKA_INSTANCE_ID=%q must be unique per instance), or the producer may not write transactions (grant Write on TransactionalId %q), "+
			"or the broker aborted the transaction on its timeout (%v: a broker that took that long to acknowledge its records; raise WORKER_COMMIT_INTERVAL, the timeout is three of them); restart it once that is fixed",
			w.cfg.InstanceID, "kafkaworker."+w.cfg.GroupID+".*", w.cfg.txnTimeout())
	}
	return &FatalError{Err: err, Hint: hint}
}
