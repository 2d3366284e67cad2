package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/kafkatest"
	"github.com/kafkaworker/kafkaworker/worker"
)

// readingStore stands for a database that takes rows in bulk: one call
// writes many rows and says which of them it rejected.
type readingStore struct {
	mu       sync.Mutex
	rows     map[string]string // key: the reading, value: its sensor
	calls    int
	rejected []string // rows it rejected (once each)
}

// insertAll writes every row it accepts in one call and returns one result
// per row, nil for written. It rejects reading-42 the first time, as a
// lock timeout would. Writing a row twice is harmless (an upsert): a
// message may be delivered again, here the later ones of a failed
// message's key in its batch.
func (s *readingStore) insertAll(msgs []*handler.Message) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		if string(m.Value) == "reading-42" && len(s.rejected) == 0 {
			s.rejected = append(s.rejected, string(m.Value))
			errs[i] = errors.New("row locked, try again")
			continue
		}
		s.rows[string(m.Value)] = string(m.Key)
	}
	return errs
}

func (s *readingStore) inserts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *readingStore) stored() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows)
}

// A batch handler: the worker hands over up to WORKER_BATCH_MAX messages of
// one partition per call (here they go to the store in one bulk insert),
// a key's messages in offset order and never in two calls at once. One
// result per message (handler.BatchResult) says which failed: only those
// are retried, here in place, and the offsets of the others are committed.
func ExampleNewBatch() {
	ctx := context.Background()
	cluster, err := kafkatest.NewCluster()
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(ctx, "readings", 2); err != nil {
		panic(err)
	}
	if err := cluster.ProduceN(ctx, "readings", 100, func(i int) ([]byte, []byte) {
		return fmt.Appendf(nil, "sensor-%d", i%10), fmt.Appendf(nil, "reading-%d", i)
	}); err != nil {
		panic(err)
	}

	cfg := worker.DefaultConfig()
	cfg.Brokers = cluster.Addrs()
	cfg.GroupID = "archiver"
	cfg.Topics = []string{"readings"}
	cfg.BatchMax = 50                          // WORKER_BATCH_MAX: rows per insert at most
	cfg.BatchWait = 20 * time.Millisecond      // WORKER_BATCH_WAIT: how long to wait for a fuller batch
	cfg.RetryBackoffInitial = time.Millisecond // a rejected row is retried in place after this

	store := &readingStore{rows: map[string]string{}}
	w, err := worker.NewBatch(cfg, handler.BatchHandlerFunc(func(ctx context.Context, msgs []*handler.Message) error {
		errs := store.insertAll(msgs)
		return handler.BatchResult(errs) // nil when every row was written
	}), worker.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(runCtx) }()
	// Wait for the commits, not for the rows: the rows of sensor-2 after
	// reading-42 in its batch were written, but they count only once
	// reading-42 is done, and are delivered again after it.
	committed := func() int64 {
		offsets, _ := cluster.CommittedOffsets(ctx, "archiver", "readings")
		return offsets[0] + offsets[1]
	}
	for committed() < 100 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()              // drain, commit, leave the group
	fmt.Println(<-done) // Run returns nil after a graceful stop

	fmt.Println("stored:", store.stored(), "rejected once:", store.rejected, "committed:", committed())
	fmt.Println("fewer inserts than rows:", store.inserts() < store.stored())
	// Output:
	// <nil>
	// stored: 100 rejected once: [reading-42] committed: 100
	// fewer inserts than rows: true
}
