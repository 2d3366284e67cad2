package commit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/IBM/sarama"
)

// genSession is a session whose generation the test moves, as sarama does
// when a rejoin completes.
type genSession struct {
	sarama.ConsumerGroupSession
	gen atomic.Int32
}

func (s *genSession) MemberID() string    { return "member-1" }
func (s *genSession) GenerationID() int32 { return s.gen.Load() }

// coordinator is a fake OffsetCommit round trip: answer decides the error
// for each request (nil: accepted); every request is recorded.
type coordinator struct {
	mu     sync.Mutex
	reqs   []*sarama.OffsetCommitRequest
	answer func(req *sarama.OffsetCommitRequest) error
	hang   chan struct{} // when set, requests block until it is closed
}

func (f *coordinator) roundTrip(req *sarama.OffsetCommitRequest) (*sarama.OffsetCommitResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	hang, answer := f.hang, f.answer
	f.mu.Unlock()
	if hang != nil {
		<-hang
		return nil, errors.New("connection closed")
	}
	resp := &sarama.OffsetCommitResponse{}
	kerr := sarama.ErrNoError
	if answer != nil {
		if err := answer(req); err != nil {
			if !errors.As(err, &kerr) {
				return nil, err
			}
		}
	}
	for _, id := range covered(req) {
		resp.AddError("t", id, kerr)
	}
	return resp, nil
}

// covered lists the partitions of topic "t" (ids 0-7) that req commits.
func covered(req *sarama.OffsetCommitRequest) []int32 {
	var ids []int32
	for id := range int32(8) {
		if _, _, err := req.Offset("t", id); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

func (f *coordinator) requests() []*sarama.OffsetCommitRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*sarama.OffsetCommitRequest(nil), f.reqs...)
}

// committerBundle is a running committer loop on a fake coordinator.
type committerBundle struct {
	c     *Committer
	coord *coordinator
	sess  *genSession
}

// setupCommitter starts a committer loop (interval 1s) inside the calling
// synctest bubble; it stops at the end of the test.
func setupCommitter(t *testing.T) *committerBundle {
	coord := &coordinator{}
	sess := &genSession{}
	sess.gen.Store(1)
	c := NewCommitter(Params{Group: "g", Interval: time.Second, Log: slog.New(slog.DiscardHandler)})
	c.roundTrip = coord.roundTrip
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		coord.mu.Lock()
		if coord.hang != nil {
			close(coord.hang)
			coord.hang = nil
		}
		coord.mu.Unlock()
		<-done
	})
	return &committerBundle{c: c, coord: coord, sess: sess}
}

// testEntry is a message of the tests' States.
type testEntry struct{ offset int64 }

func (e *testEntry) Offset() int64 { return e.offset }

// part adds a partition with offset marked ready to commit, nothing
// committed yet.
func (b *committerBundle) part(id int32, marked int64) *State[*testEntry] {
	p := NewState[*testEntry](StateParams{Topic: "t", Partition: id, Session: b.sess, Initial: -1, Log: slog.New(slog.DiscardHandler)})
	p.setMarked(marked)
	b.c.Add(p)
	return p
}

// setMarked marks offset as the next to commit, as progress would.
func (s *State[T]) setMarked(offset int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marked = offset
}

func TestCommitterFlushWaitsOutARebalance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setupCommitter(t)
		// The group moved to generation 2; this member learns it 1s later.
		b.coord.answer = func(req *sarama.OffsetCommitRequest) error {
			if req.ConsumerGroupGeneration < 2 {
				return sarama.ErrIllegalGeneration
			}
			return nil
		}
		p := b.part(0, 42)
		time.AfterFunc(time.Second, func() { b.sess.gen.Store(2) })
		began := time.Now()
		if err := b.c.Flush(p, began.Add(5*time.Second), nil); err != nil {
			t.Fatalf("flush: %v, want nil once the generation settled", err)
		}
		if took := time.Since(began); took < time.Second || took > time.Second+2*RetryEvery {
			t.Fatalf("flush took %v; want it acknowledged within a retry of the generation changing at 1s", took)
		}
		reqs := b.coord.requests()
		last := reqs[len(reqs)-1]
		if last.ConsumerGroupGeneration != 2 || len(reqs) < 5 {
			t.Fatalf("%d requests, last with generation %d; want retries every %v ending with generation 2",
				len(reqs), last.ConsumerGroupGeneration, RetryEvery)
		}
		if off, _, _ := last.Offset("t", 0); off != 42 || p.Snapshot().Committed != 42 {
			t.Fatalf("committed offset %d (request %d), want 42", p.Snapshot().Committed, off)
		}
	})
}

func TestCommitterFlushGivesUpAtItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setupCommitter(t)
		b.coord.answer = func(*sarama.OffsetCommitRequest) error { return sarama.ErrRebalanceInProgress }
		p := b.part(0, 7)
		began := time.Now()
		err := b.c.Flush(p, began.Add(2*time.Second), nil)
		if !errors.Is(err, sarama.ErrRebalanceInProgress) {
			t.Fatalf("flush: %v, want the last error, %v", err, sarama.ErrRebalanceInProgress)
		}
		if took := time.Since(began); took < 2*time.Second || took > 2*time.Second+RetryEvery {
			t.Fatalf("flush took %v, want its 2s deadline", took)
		}
	})
}

func TestCommitterFlushReturnsAtOnceOnAnErrorRetryingCannotFix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setupCommitter(t)
		b.coord.answer = func(*sarama.OffsetCommitRequest) error { return sarama.ErrUnknownMemberId }
		p := b.part(0, 7)
		began := time.Now()
		if err := b.c.Flush(p, began.Add(time.Minute), nil); !errors.Is(err, sarama.ErrUnknownMemberId) {
			t.Fatalf("flush: %v, want %v", err, sarama.ErrUnknownMemberId)
		}
		if took := time.Since(began); took != 0 {
			t.Fatalf("flush took %v of virtual time, want an immediate answer", took)
		}
	})
}

// A coordinator that takes requests and never answers: each flush ends at
// its deadline, and no second request is sent while the first is
// outstanding (it would only queue behind it on the same connection).
func TestCommitterSilentCoordinatorNeitherBlocksNorPilesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setupCommitter(t)
		b.coord.hang = make(chan struct{})
		p0 := b.part(0, 5)
		b.part(1, 9)
		for range 3 {
			began := time.Now()
			err := b.c.Flush(p0, began.Add(time.Second), nil)
			if !errors.Is(err, errCommitTimeout) {
				t.Fatalf("flush: %v, want %v", err, errCommitTimeout)
			}
			if took := time.Since(began); took > time.Second+RetryEvery {
				t.Fatalf("flush took %v, want its 1s deadline", took)
			}
		}
		time.Sleep(10 * time.Second) // periodic rounds come and go meanwhile
		reqs := b.coord.requests()
		if len(reqs) != 1 {
			t.Fatalf("%d requests sent to a coordinator that never answered the first; want 1", len(reqs))
		}
		if ids := covered(reqs[0]); len(ids) != 2 {
			t.Fatalf("the request covered partitions %v; want both partitions of the session in it", ids)
		}
	})
}

// Partitions released together go in one request, and a released partition
// is never committed again.
func TestCommitterReleasesTogetherInOneRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setupCommitter(t)
		parts := []*State[*testEntry]{b.part(0, 1), b.part(1, 2), b.part(2, 3), b.part(3, 4)}
		var wg sync.WaitGroup
		deadline := time.Now().Add(5 * time.Second)
		for _, p := range parts {
			wg.Go(func() {
				if err := b.c.Release(p, deadline); err != nil {
					t.Errorf("release %d: %v", p.Partition(), err)
				}
			})
		}
		wg.Wait()
		reqs := b.coord.requests()
		if len(reqs) != 1 || len(covered(reqs[0])) != 4 {
			t.Fatalf("%d requests (first covering %v); want one request for all 4", len(reqs), covered(reqs[0]))
		}
		for _, p := range parts {
			p.setMarked(p.Snapshot().Resume + 1) // progress after the release must not be committed
		}
		time.Sleep(3 * time.Second)
		if n := len(b.coord.requests()); n != 1 {
			t.Fatalf("%d requests after the release; want none", n-1)
		}
	})
}
