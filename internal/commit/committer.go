package commit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/internal/attr"
	"github.com/kafkaworker/kafkaworker/internal/txn"
)

// commitRequestTimeout bounds one OffsetCommit round trip: the committer's
// client reads with this timeout (or sarama's Net.ReadTimeout if lower), so
// a coordinator that accepts a request and never answers holds nothing up
// for long. A commit is small; a healthy coordinator answers in
// milliseconds.
const commitRequestTimeout = 5 * time.Second

// RetryEvery is how soon a commit that a waiting flush needs is sent
// again after a retriable failure (a rebalance in progress, a moving
// coordinator).
const RetryEvery = 100 * time.Millisecond

// errCommitTimeout is the error of a commit that got no answer in time.
var errCommitTimeout = errors.New("kafkaworker: offset commit got no answer in time")

// errGivenUp is a flush's error for a partition released without a
// commit: its transaction aborted (exactly-once).
var errGivenUp = errors.New("kafkaworker: the partition was given up when its transaction aborted; nothing more is committed for it, and its messages since the last commit are handled again")

// errCommitterStopped is what a flush still waiting gets when the
// committer's loop ends.
var errCommitterStopped = errors.New("kafkaworker: committer stopped before the commit was acknowledged")

// Committer sends each partition's committable offset, with its done-set
// as metadata, to the group coordinator: every CommitInterval for all
// partitions, and at once when a partition asks to be flushed (its start
// position when first claimed, its final state when released).
//
// One goroutine (Run) does all the sending, one request at a time and one
// request per session covering every partition of that session with
// progress, so a periodic commit built before a release can never land
// after the release's final one and move the offset back. No lock is held
// during a request; a flush waits on a channel with its own deadline, and
// a request that gets no answer by then is abandoned, never waited for
// while anything else queues behind it.
type Committer struct {
	client     sarama.Client
	group      string
	version    sarama.KafkaVersion
	instanceID string
	log        *slog.Logger
	onCommit   func(ok bool) // counts each request's result; may be nil
	beat       func()        // each interval tick, for the liveness check; may be nil
	interval   time.Duration
	wake       chan struct{} // a flush is waiting; buffered 1
	// roundTrip sends one request to the coordinator: commit, or a fake in
	// unit tests.
	roundTrip func(*sarama.OffsetCommitRequest) (*sarama.OffsetCommitResponse, error)

	mu      sync.Mutex // guards parts and flushes; never held during I/O
	parts   map[committable]struct{}
	flushes map[committable]*flush

	inflight chan exchangeResult // the request still unanswered, if any; loop only

	txn   *txn.Txn    // nil unless exactly-once
	fatal func(error) // may be nil
}

// flush is a wait for one partition's current progress to be acknowledged.
type flush struct {
	deadline time.Time
	done     chan error // buffered 1; nil once answered
	lastErr  error
}

type exchangeResult struct {
	resp *sarama.OffsetCommitResponse
	err  error
}

// committable is how the committer sees a partition's State: what to
// commit (a snapshot, the done-set brought up to date), then the
// acknowledgement of what landed.
type committable interface {
	Topic() string
	Partition() int32
	session() sarama.ConsumerGroupSession
	toCommit() (offset int64, meta string, ok bool)
	acked() bool
	ack(offset int64, meta string)
	release()
	released() bool
}

// Params are what a Committer is made from.
type Params struct {
	Client     sarama.Client // the committer's own client (see ClientConfig)
	Group      string
	Version    sarama.KafkaVersion // the protocol version: picks the request version
	InstanceID string              // static membership id, or ""
	Interval   time.Duration       // WORKER_COMMIT_INTERVAL
	Log        *slog.Logger
	OnCommit   func(ok bool) // each request's result, for the commits metric; may be nil
	Beat       func()        // called every interval, for the liveness check; may be nil
	// Txn, when not nil, is the exactly-once worker's transaction: offsets
	// are committed in it (txn_round.go), not with OffsetCommit.
	Txn *txn.Txn
	// Fatal is told when the transactional producer cannot go on (another
	// worker took over its transactional id); may be nil.
	Fatal func(error)
}

// NewCommitter makes a committer; Run runs it.
func NewCommitter(p Params) *Committer {
	c := &Committer{client: p.Client, group: p.Group, version: p.Version, instanceID: p.InstanceID,
		interval: p.Interval, log: p.Log, onCommit: p.OnCommit, beat: p.Beat, wake: make(chan struct{}, 1),
		parts: map[committable]struct{}{}, flushes: map[committable]*flush{}, txn: p.Txn, fatal: p.Fatal}
	c.roundTrip = c.commit
	return c
}

// ClientConfig is the configuration of the committer's own client: the
// worker's, with reads bounded by commitRequestTimeout.
func ClientConfig(base *sarama.Config) *sarama.Config {
	c := *base
	c.Net.ReadTimeout = min(c.Net.ReadTimeout, commitRequestTimeout)
	return &c
}

// Add starts committing p's progress, every interval and when flushed.
func (c *Committer) Add(p committable) {
	c.mu.Lock()
	c.parts[p] = struct{}{}
	c.mu.Unlock()
}

// Run commits every interval, and whenever a flush waits, until ctx is
// done. Flushes still waiting then get errCommitterStopped.
func (c *Committer) Run(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	defer c.failFlushes(errCommitterStopped)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c.beat != nil {
				c.beat()
			}
		case <-c.wake:
		case <-retry.C:
		}
		if wait := c.round(); wait {
			retry.Reset(RetryEvery)
		}
	}
}

// round commits every partition with progress, one request per session,
// answers the flushes it can, and reports whether some still wait.
func (c *Committer) round() (flushesWait bool) {
	if c.txn != nil {
		return c.txnRound()
	}
	c.settleFlushes() // a flush past its deadline is answered, not sent for again
	c.mu.Lock()
	bySess := map[sarama.ConsumerGroupSession][]committable{}
	for p := range c.parts {
		bySess[p.session()] = append(bySess[p.session()], p)
	}
	c.mu.Unlock()
	for sess, parts := range bySess {
		err := c.send(sess, parts, c.deadlineFor(parts))
		if err != nil && !c.anyFlush(parts) {
			c.log.Error("commit failed; it is retried at the next interval", slog.Any("error", err))
		}
	}
	return c.settleFlushes()
}

// deadlineFor is how long a request for parts may take: a request's
// timeout, or less when a flush among them must be answered sooner.
func (c *Committer) deadlineFor(parts []committable) time.Time {
	d := time.Now().Add(commitRequestTimeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range parts {
		if f := c.flushes[p]; f != nil && f.deadline.Before(d) {
			d = f.deadline
		}
	}
	return d
}

func (c *Committer) anyFlush(parts []committable) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range parts {
		if c.flushes[p] != nil {
			return true
		}
	}
	return false
}

// settleFlushes answers each waiting flush whose partition's progress is
// acknowledged, whose last failure cannot be cured by retrying, or whose
// deadline passed. It reports whether some still wait.
func (c *Committer) settleFlushes() (wait bool) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, f := range c.flushes {
		switch {
		case p.acked():
			f.done <- nil
		case f.lastErr != nil && !retriableCommit(f.lastErr):
			f.done <- f.lastErr
		case !now.Before(f.deadline):
			f.done <- orErr(f.lastErr, errCommitTimeout)
		default:
			wait = true
			continue
		}
		delete(c.flushes, p)
	}
	return wait
}

// orErr returns err, or fallback when err is nil.
func orErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

func (c *Committer) failFlushes(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, f := range c.flushes {
		f.done <- orErr(f.lastErr, err)
		delete(c.flushes, p)
	}
}

// Flush waits until p's progress as of now is acknowledged by the
// coordinator, retrying failures that a rebalance in progress or a moving
// coordinator cause, until deadline or until cancel is closed. It returns
// nil once acknowledged (or when there is nothing to commit).
func (c *Committer) Flush(p committable, deadline time.Time, cancel <-chan struct{}) error {
	if p.released() {
		return errGivenUp
	}
	f := &flush{deadline: deadline, done: make(chan error, 1)}
	c.mu.Lock()
	c.flushes[p] = f
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	// The loop answers by the deadline unless a request it abandoned is
	// still winding down; never wait much longer than asked.
	timer := time.NewTimer(time.Until(deadline) + RetryEvery)
	defer timer.Stop()
	select {
	case err := <-f.done:
		return err
	case <-cancel:
	case <-timer.C:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flushes[p] == f {
		delete(c.flushes, p)
		return orErr(f.lastErr, errCommitTimeout)
	}
	return <-f.done // answered meanwhile
}

// Release makes p's final commit (see Flush) and then drops p: nothing is
// committed for it afterwards.
func (c *Committer) Release(p committable, deadline time.Time) error {
	err := c.Flush(p, deadline, nil)
	c.mu.Lock()
	delete(c.parts, p)
	c.mu.Unlock()
	p.release()
	return err
}

// send commits the progress of parts, all of one session, within
// deadline. It returns the first error; the partitions that succeeded are
// recorded as committed, and every waiting flush among parts learns the
// error of its own partition.
func (c *Committer) send(sess sarama.ConsumerGroupSession, parts []committable, deadline time.Time) error {
	req := c.request(sess)
	var sent []committable
	for _, p := range parts {
		if off, meta, ok := p.toCommit(); ok {
			req.AddBlockWithLeaderEpoch(p.Topic(), p.Partition(), off, -1, 0, meta)
			sent = append(sent, p)
		}
	}
	if len(sent) == 0 {
		return nil
	}
	resp, err := c.exchange(req, deadline)
	var first error
	for _, p := range sent {
		perr := partitionCommitError(resp, err, p)
		off, meta, _ := req.Offset(p.Topic(), p.Partition())
		c.log.Debug("commit attempt", attr.Topic(p.Topic()), attr.Partition(p.Partition()),
			slog.Int64("offset", off), slog.Int("generation", int(req.ConsumerGroupGeneration)),
			slog.String("member_id", req.ConsumerID), slog.Any("result", orErr(perr, errNone)))
		c.noteFlushError(p, perr)
		if perr != nil {
			first = orErr(first, perr)
			continue
		}
		p.ack(off, meta)
	}
	if c.onCommit != nil {
		c.onCommit(first == nil)
	}
	if c.client != nil && (errors.Is(first, sarama.ErrNotCoordinatorForConsumer) || errors.Is(first, sarama.ErrConsumerCoordinatorNotAvailable)) {
		go func() { _ = c.client.RefreshCoordinator(c.group) }() // bounded by the client's timeouts; never blocks the loop
	}
	return first
}

var errNone = errors.New("ok")

func partitionCommitError(resp *sarama.OffsetCommitResponse, err error, p committable) error {
	if err != nil {
		return err
	}
	kerr, ok := resp.Errors[p.Topic()][p.Partition()]
	switch {
	case !ok:
		return sarama.ErrIncompleteResponse
	case kerr != sarama.ErrNoError:
		return kerr
	}
	return nil
}

func (c *Committer) noteFlushError(p committable, err error) {
	c.mu.Lock()
	if f := c.flushes[p]; f != nil {
		f.lastErr = err
	}
	c.mu.Unlock()
}

// exchange sends req to the coordinator and waits for the answer until
// deadline. A request still unanswered then is abandoned: the next
// exchange first waits (again until its own deadline) for it to end, so at
// most one request is ever outstanding and requests land in order.
func (c *Committer) exchange(req *sarama.OffsetCommitRequest, deadline time.Time) (*sarama.OffsetCommitResponse, error) {
	if !time.Now().Before(deadline) {
		return nil, errCommitTimeout
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	if c.inflight != nil {
		select {
		case <-c.inflight:
			c.inflight = nil
		case <-timer.C:
			return nil, fmt.Errorf("%w: an earlier commit is still unanswered", errCommitTimeout)
		}
	}
	ch := make(chan exchangeResult, 1)
	go func() {
		resp, err := c.roundTrip(req)
		ch <- exchangeResult{resp, err}
	}()
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-timer.C:
		c.inflight = ch
		return nil, errCommitTimeout
	}
}

func (c *Committer) commit(req *sarama.OffsetCommitRequest) (*sarama.OffsetCommitResponse, error) {
	broker, err := c.client.Coordinator(c.group)
	if err != nil {
		return nil, err
	}
	resp, err := broker.CommitOffset(req)
	if err != nil {
		_ = c.client.RefreshCoordinator(c.group)
		return nil, err
	}
	return resp, nil
}

// request builds an OffsetCommit request for sess at the version sarama's
// own offset manager would use.
func (c *Committer) request(sess sarama.ConsumerGroupSession) *sarama.OffsetCommitRequest {
	r := &sarama.OffsetCommitRequest{
		Version: 2, ConsumerGroup: c.group, ConsumerID: sess.MemberID(),
		ConsumerGroupGeneration: sess.GenerationID(),
	}
	switch v := c.version; {
	case v.IsAtLeast(sarama.V2_4_0_0):
		r.Version = 8
	case v.IsAtLeast(sarama.V2_3_0_0):
		r.Version = 7
	case v.IsAtLeast(sarama.V2_1_0_0):
		r.Version = 6
	case v.IsAtLeast(sarama.V2_0_0_0):
		r.Version = 4
	case v.IsAtLeast(sarama.V0_11_0_0):
		r.Version = 3
	}
	if r.Version >= 2 && r.Version <= 4 {
		r.RetentionTime = -1 // the broker's retention; later versions have no field
	}
	if r.Version >= 7 && c.instanceID != "" && !isDynamic(sess) {
		r.GroupInstanceId = &c.instanceID
	}
	return r
}

// DynamicMember is implemented by the session of a group member that has
// no static membership although the worker has one (its retry tiers'
// member): its commits carry no instance id.
type DynamicMember interface {
	DynamicMember()
}

func isDynamic(sess sarama.ConsumerGroupSession) bool {
	_, ok := sess.(DynamicMember)
	return ok
}

// retriableCommit reports whether a failed commit may succeed if sent again
// shortly: the group is mid-rebalance (the session's generation is about to
// change), the coordinator moved or is loading, or it did not answer.
func retriableCommit(err error) bool {
	var aborted *txn.AbortedError
	var fatal *txn.FatalError
	if errors.As(err, &aborted) || errors.As(err, &fatal) {
		return false // the partition is given up; its messages are handled again
	}
	var kerr sarama.KError
	if !errors.As(err, &kerr) {
		return true // network trouble or no answer: the coordinator is looked up again
	}
	switch kerr {
	case sarama.ErrRebalanceInProgress, sarama.ErrIllegalGeneration, sarama.ErrNotCoordinatorForConsumer,
		sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress, sarama.ErrRequestTimedOut:
		return true
	}
	return false
}
