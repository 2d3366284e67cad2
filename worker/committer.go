package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// committer sends each partition's committable offset, with its done-set
// as metadata, to the group coordinator: every CommitInterval for all
// partitions, and synchronously for a partition being released.
//
// The worker commits itself instead of through sarama's offset manager so
// that it sees every commit's result (for the commits_total metric and the
// logs) and can retry a release commit that meets a rebalance in progress
// until the generation settles. Commits are serialised: a periodic commit
// taken before a release can never land after the release's final one and
// move the offset back.
type committer struct {
	client     sarama.Client
	group      string
	version    sarama.KafkaVersion
	instanceID string
	log        *slog.Logger
	metrics    *metrics
	health     *health

	mu    sync.Mutex // serialises commits and guards parts
	parts map[*partition]struct{}
}

func newCommitter(w *Worker, client sarama.Client, m *metrics) *committer {
	return &committer{client: client, group: w.cfg.GroupID, version: w.sarama.Version, instanceID: w.cfg.InstanceID,
		log: w.log, metrics: m, health: &w.health, parts: map[*partition]struct{}{}}
}

func (c *committer) add(p *partition) {
	c.mu.Lock()
	c.parts[p] = struct{}{}
	c.mu.Unlock()
}

// loop commits every interval until ctx is done.
func (c *committer) loop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.health.beat(loopCommitter)
			c.commitAll()
		}
	}
}

// commitAll commits every partition with progress, one request per session.
func (c *committer) commitAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	bySess := map[sarama.ConsumerGroupSession][]*partition{}
	for p := range c.parts {
		bySess[p.sess] = append(bySess[p.sess], p)
	}
	for sess, parts := range bySess {
		if err := c.send(sess, parts); err != nil {
			c.log.Error("commit failed; it is retried at the next interval", slog.Any("error", err))
		}
	}
}

// release makes p's final commit, retrying errors that a rebalance in
// progress or a moving coordinator cause until deadline, and then drops p:
// nothing is committed for it afterwards.
func (c *committer) release(p *partition, deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() {
		delete(c.parts, p)
		p.mu.Lock()
		p.released = true
		p.mu.Unlock()
	}()
	for {
		err := c.send(p.sess, []*partition{p})
		if err == nil || !retriableCommit(err) || time.Now().Add(100*time.Millisecond).After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // the generation settles or the coordinator moves
	}
}

// send commits the progress of parts, all of one session. It returns the
// first error; the partitions that succeeded are recorded as committed.
func (c *committer) send(sess sarama.ConsumerGroupSession, parts []*partition) error {
	req := c.request(sess)
	var sent []*partition
	for _, p := range parts {
		p.mu.Lock()
		p.refreshDoneSet()
		if !p.released && p.marked >= 0 && (p.marked != p.committed || p.meta != p.commitMeta) {
			req.AddBlockWithLeaderEpoch(p.topic, p.id, p.marked, -1, 0, p.meta)
			sent = append(sent, p)
		}
		p.mu.Unlock()
	}
	if len(sent) == 0 {
		return nil
	}
	resp, err := c.commit(req)
	var first error
	for _, p := range sent {
		perr := err
		if perr == nil {
			if kerr, ok := resp.Errors[p.topic][p.id]; !ok {
				perr = sarama.ErrIncompleteResponse
			} else if kerr != sarama.ErrNoError {
				perr = kerr
			}
		}
		if perr != nil {
			if first == nil {
				first = perr
			}
			continue
		}
		off, meta, _ := req.Offset(p.topic, p.id)
		p.mu.Lock()
		p.committed, p.commitMeta = off, meta
		p.mu.Unlock()
	}
	c.metrics.commit(first == nil)
	if errors.Is(first, sarama.ErrNotCoordinatorForConsumer) || errors.Is(first, sarama.ErrConsumerCoordinatorNotAvailable) {
		_ = c.client.RefreshCoordinator(c.group)
	}
	return first
}

func (c *committer) commit(req *sarama.OffsetCommitRequest) (*sarama.OffsetCommitResponse, error) {
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
func (c *committer) request(sess sarama.ConsumerGroupSession) *sarama.OffsetCommitRequest {
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
	if r.Version >= 7 && c.instanceID != "" {
		r.GroupInstanceId = &c.instanceID
	}
	return r
}

// retriableCommit reports whether a failed commit may succeed if sent again
// shortly: the group is mid-rebalance (the session's generation is about to
// change), or the coordinator moved or is loading.
func retriableCommit(err error) bool {
	var kerr sarama.KError
	if !errors.As(err, &kerr) {
		return true // network trouble: the coordinator is looked up again
	}
	switch kerr {
	case sarama.ErrRebalanceInProgress, sarama.ErrIllegalGeneration, sarama.ErrNotCoordinatorForConsumer,
		sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress, sarama.ErrRequestTimedOut:
		return true
	}
	return false
}
