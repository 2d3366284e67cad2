// Package txn is the open Kafka transaction of an exactly-once worker
// (WORKER_EXACTLY_ONCE): the output of handled messages, their retry-tier
// and dead-letter forwards, and, at each commit, the source offsets with
// their done-sets go into one transaction, committed once per commit
// interval and then begun anew.
//
// A delivery puts its records in between Enter and Leave, and finishes its
// message in the commit state before it leaves; the committer holds the
// gate exclusively (Hold) while it takes the offsets and commits, so the
// offsets a transaction commits cover exactly the messages whose records
// it holds. When a commit fails the transaction is aborted: every
// partition claimed under the aborted epoch is given up without a final
// commit (Aborted is closed) and its messages are handled again from the
// last committed offsets, by this worker after it rejoins or by another.
package txn

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/kconn"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
)

// Params are what a Txn is made from.
type Params struct {
	Brokers []string
	Sarama  *sarama.Config // the worker's client configuration; copied
	ID      string         // the transactional.id
	Timeout time.Duration  // how long the broker lets a transaction stay open before it aborts it
	Log     *slog.Logger
	Metrics *telemetry.ProducerMetrics // counts handler output as package producer does; may be nil
	// Partitions lists a topic's partitions from the cluster's metadata
	// (a client of the worker's): Check refuses output to a topic or a
	// partition that does not exist. nil: not checked.
	Partitions func(topic string) ([]int32, error)
	// Refresh re-reads topics' metadata: a partition Partitions does not
	// list is looked for once more (it may have been added since). nil:
	// not refreshed.
	Refresh func(topics ...string) error
}

// Txn is the worker's transactional producer and its open transaction.
type Txn struct {
	ap     sarama.AsyncProducer
	dialer *kconn.SeverableDialer // Close cuts the connections when a silent broker holds it up
	// apMu is held shared while ap is used (Send, Commit) and exclusively
	// by Close, so that a commit the run gave up waiting for never touches
	// a closed producer; closed is set once ap is closed.
	apMu    sync.RWMutex
	closed  bool
	id      string
	log     *slog.Logger
	metrics *telemetry.ProducerMetrics // may be nil

	// For Check: the cluster's partitions, the records' format version
	// (sarama's ByteSize) and the producer's largest record.
	partitions    func(topic string) ([]int32, error)
	refresh       func(topics ...string) error
	recordVersion int
	maxBytes      int

	// gate is shared by deliveries between Enter and Leave, and held
	// exclusively by a commit.
	gate sync.RWMutex

	mu      sync.Mutex // guards epoch and aborted
	epoch   uint64
	aborted chan struct{} // closed when epoch's transaction aborts

	sent   atomic.Int64 // records put in the open transaction
	doomed atomic.Bool  // the open transaction must abort (Doom)

	pendMu  sync.Mutex    // guards pending and idle
	pending int64         // records sent and not yet acknowledged or failed
	idle    chan struct{} // closed while pending is 0

	drained sync.WaitGroup // the goroutines reading successes and errors
}

// flushTimeout bounds how long a commit waits for the transaction's
// records to be acknowledged before it gives up and aborts.
const flushTimeout = 30 * time.Second

// requestTimeout bounds one request of the transactional producer: a
// healthy broker answers in milliseconds.
const requestTimeout = 5 * time.Second

// AbortedError is a commit's error when the transaction was aborted; its
// messages are handled again.
type AbortedError struct{ Cause error }

func (e *AbortedError) Error() string {
	return fmt.Sprintf("kafkaworker: transaction aborted; its messages are handled again from the last committed offsets: %v", e.Cause)
}

func (e *AbortedError) Unwrap() error { return e.Cause }

// FatalError is a commit's error when the producer cannot go on: another
// worker took over this transactional id (fenced), or an abort failed.
type FatalError struct{ Err error }

func (e *FatalError) Error() string {
	return fmt.Sprintf("kafkaworker: the transactional producer cannot go on: %v", e.Err)
}

func (e *FatalError) Unwrap() error { return e.Err }

// errDoomed is the cause of an abort asked for by Doom.
var errDoomed = errors.New("a delivery's records went into the transaction, but its partition was given up before its offset could follow")

// New starts the transactional producer (InitProducerId fences an earlier
// producer with the same id and aborts its open transaction) and begins
// the first transaction.
func New(p Params) (*Txn, error) {
	c := *p.Sarama
	c.ClientID = p.Sarama.ClientID + "-txn"
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Transaction.ID = p.ID
	c.Producer.Transaction.Timeout = p.Timeout
	c.Producer.Return.Errors = true
	c.Producer.Return.Successes = true // counted: a commit waits for every record first
	c.Producer.Partitioner = kconn.ExplicitFirst(sarama.NewMurmur2Partitioner, explicitPartition)
	// A transaction request is retried for about a second (sarama's
	// default is 50 tries), each bounded by the commit request timeout, so
	// a commit against a silent coordinator gives up and aborts in time.
	c.Producer.Transaction.Retry.Max, c.Producer.Transaction.Retry.Backoff = 10, 100*time.Millisecond
	c.Net.ReadTimeout = min(c.Net.ReadTimeout, requestTimeout)
	dialer := kconn.InstallSeverableDialer(&c)
	// Once Close has cut the connections every attempt fails at once:
	// sarama's retries then run without their pauses and end in
	// milliseconds, instead of outliving the run by seconds.
	c.Metadata.Retry.BackoffFunc = unlessSevered(dialer, c.Metadata.Retry.Backoff)
	c.Producer.Retry.BackoffFunc = unlessSevered(dialer, c.Producer.Retry.Backoff)
	c.Producer.Transaction.Retry.BackoffFunc = unlessSevered(dialer, c.Producer.Transaction.Retry.Backoff)
	ap, err := sarama.NewAsyncProducer(p.Brokers, &c)
	if err != nil {
		dialer.Sever()
		return nil, fmt.Errorf("kafkaworker: start the transactional producer (transactional.id %q): %w", p.ID, err)
	}
	t := &Txn{ap: ap, dialer: dialer, id: p.ID, log: p.Log, metrics: p.Metrics, aborted: make(chan struct{}), idle: make(chan struct{}),
		partitions: p.Partitions, refresh: p.Refresh, recordVersion: 1, maxBytes: c.Producer.MaxMessageBytes}
	if c.Version.IsAtLeast(sarama.V0_11_0_0) {
		t.recordVersion = 2
	}
	close(t.idle)
	t.drained.Add(2)
	go t.drainErrors()
	go t.drainSuccesses()
	if err := ap.BeginTxn(); err != nil {
		_ = t.Close(requestTimeout)
		return nil, fmt.Errorf("kafkaworker: begin a transaction (transactional.id %q): %w", p.ID, err)
	}
	return t, nil
}

// drainErrors reads the producer's errors: sarama has already made the
// transaction abortable, so the next Commit aborts it.
func (t *Txn) drainErrors() {
	defer t.drained.Done()
	for err := range t.ap.Errors() {
		t.log.Warn("a record of the open transaction was not written; the transaction will abort and its messages be handled again",
			slog.String("topic", err.Msg.Topic), slog.Any("error", err.Err))
		if o, ok := err.Msg.Metadata.(*output); ok && t.metrics != nil {
			t.metrics.Failed(err.Msg.Topic, forward.ErrorReason(err.Err), time.Since(o.sent))
		}
		t.settled()
	}
}

func (t *Txn) drainSuccesses() {
	defer t.drained.Done()
	for m := range t.ap.Successes() {
		if o, ok := m.Metadata.(*output); ok && t.metrics != nil {
			t.metrics.Sent(m.Topic, time.Since(o.sent))
		}
		t.settled()
	}
}

// settled counts one record acknowledged or failed.
func (t *Txn) settled() {
	t.pendMu.Lock()
	defer t.pendMu.Unlock()
	if t.pending--; t.pending == 0 {
		close(t.idle)
	}
}

// waitSettled waits until every record sent is acknowledged or failed, so
// that nothing of the transaction is in flight while its offsets go in and
// it ends (sarama's transaction manager races a failing record against a
// state change otherwise), and reports whether that happened in time.
func (t *Txn) waitSettled() bool {
	t.pendMu.Lock()
	idle := t.idle
	t.pendMu.Unlock()
	timer := time.NewTimer(flushTimeout)
	defer timer.Stop()
	select {
	case <-idle:
		return true
	case <-timer.C:
		return false
	}
}

// Current is the epoch deliveries enter with, and the channel closed when
// its transaction aborts.
func (t *Txn) Current() (epoch uint64, aborted <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch, t.aborted
}

// Enter lets a delivery of a partition claimed in epoch put records in the
// open transaction; it reports false, and the delivery must not, once
// that epoch's transaction aborted. A true Enter must be followed by
// Leave, after the message is finished in its commit state.
func (t *Txn) Enter(epoch uint64) bool {
	t.gate.RLock()
	t.mu.Lock()
	ok := t.epoch == epoch
	t.mu.Unlock()
	if !ok {
		t.gate.RUnlock()
	}
	return ok
}

// Leave ends what Enter began.
func (t *Txn) Leave() { t.gate.RUnlock() }

// Send puts records in the open transaction; called between Enter and
// Leave. sarama sends them in the background; a failure makes the commit
// abort.
func (t *Txn) Send(msgs ...*sarama.ProducerMessage) {
	t.apMu.RLock()
	defer t.apMu.RUnlock()
	if t.closed {
		return // the run is over; the transaction never commits
	}
	t.sent.Add(int64(len(msgs)))
	t.pendMu.Lock()
	if t.pending == 0 && len(msgs) > 0 {
		t.idle = make(chan struct{})
	}
	t.pending += int64(len(msgs))
	t.pendMu.Unlock()
	for _, m := range msgs {
		t.ap.Input() <- m
	}
}

// Doom makes the open transaction abort at its commit: a delivery put
// records in it that cannot be matched by its offset.
func (t *Txn) Doom() { t.doomed.Store(true) }

// Hold takes the gate exclusively: no delivery is between its records and
// its commit state. The committer holds it around taking the offsets and
// Commit.
func (t *Txn) Hold() { t.gate.Lock() }

// Release ends Hold.
func (t *Txn) Release() { t.gate.Unlock() }

// Offsets are one consumer group session's offsets for a transaction.
type Offsets struct {
	Group  sarama.ConsumerGroupMetadata
	Topics map[string][]*sarama.PartitionOffsetMetadata
}

// Commit commits the open transaction with offsets and begins the next;
// called under Hold. With nothing to commit it does nothing. A failure
// aborts the transaction and returns an *AbortedError, or a *FatalError
// when the producer cannot go on.
func (t *Txn) Commit(offsets []Offsets) error {
	t.apMu.RLock()
	defer t.apMu.RUnlock()
	if t.closed {
		return &FatalError{Err: errClosed}
	}
	if t.doomed.Load() {
		return t.abort(errDoomed)
	}
	if len(offsets) == 0 && t.sent.Load() == 0 {
		return nil
	}
	if !t.waitSettled() {
		return t.abort(fmt.Errorf("the transaction's records were not acknowledged within %v", flushTimeout))
	}
	for _, o := range offsets {
		if err := t.ap.AddOffsetsToTxnWithGroupMetadata(o.Topics, &o.Group); err != nil {
			return t.abort(err)
		}
	}
	if err := t.ap.CommitTxn(); err != nil {
		return t.abort(err)
	}
	t.sent.Store(0)
	if err := t.ap.BeginTxn(); err != nil {
		return &FatalError{Err: fmt.Errorf("begin the next transaction: %w", err)}
	}
	return nil
}

// abort aborts the open transaction for cause, ends its epoch and begins
// the next transaction.
func (t *Txn) abort(cause error) error {
	if fatal(cause) || t.ap.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		t.endEpoch()
		return &FatalError{Err: cause}
	}
	err := t.ap.AbortTxn()
	t.endEpoch()
	t.sent.Store(0)
	t.doomed.Store(false)
	if err != nil {
		return &FatalError{Err: fmt.Errorf("abort after %v: %w", cause, err)}
	}
	if err := t.ap.BeginTxn(); err != nil {
		return &FatalError{Err: fmt.Errorf("begin a transaction after an abort: %w", err)}
	}
	return &AbortedError{Cause: cause}
}

// fatal reports whether err means another producer took over the id.
func fatal(err error) bool {
	return errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) ||
		errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed)
}

func (t *Txn) endEpoch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch++
	close(t.aborted)
	t.aborted = make(chan struct{})
}

// Close aborts the open transaction, if it holds anything, and closes the
// producer. If that is not done within timeout (a silent broker), it cuts
// the producer's connections, so that what sarama still waits for fails at
// once and the rest winds down on its own, and returns errCloseTimeout:
// the broker aborts the transaction after its timeout.
func (t *Txn) Close(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		t.apMu.Lock() // a commit under way ends first (cut off by Sever if need be)
		t.closed = true
		if t.ap.TxnStatus()&sarama.ProducerTxnFlagInTransaction != 0 && t.sent.Load() > 0 {
			_ = t.ap.AbortTxn()
		}
		err := t.ap.Close()
		t.apMu.Unlock()
		t.drained.Wait()
		done <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	t.dialer.Sever() // sarama's requests fail at once now, and its retries run out without pausing
	return errCloseTimeout
}

// unlessSevered is a retry backoff of d, or none once dialer is severed.
func unlessSevered(dialer *kconn.SeverableDialer, d time.Duration) func(retries, maxRetries int) time.Duration {
	return func(int, int) time.Duration {
		if dialer.Severed() {
			return 0
		}
		return d
	}
}

// errClosed is a commit's error once the producer is closed.
var errClosed = errors.New("the transactional producer is closed")

// errCloseTimeout is Close's error when it had to cut the connections.
var errCloseTimeout = errors.New("kafkaworker: the transactional producer did not close in time; its connections were cut and the broker aborts its open transaction after the transaction timeout")
