package worker

import (
	"errors"
	"log/slog"
	"sync"

	"github.com/IBM/sarama"
)

// logGroupErrors logs what sarama reports on the group's error channel. A
// consumed topic that no longer exists, or that the worker may not read,
// shows only there (its partition consumers retry, the session goes on):
// an authorization failure is reported to failed as a *FatalError at once;
// a missing topic makes it check, and once the topics have stayed missing
// it reports a *FatalError to failed.
func (w *Worker) logGroupErrors(group sarama.ConsumerGroup, admin sarama.ClusterAdmin, topics []string, failed *fatalSignal, done chan<- struct{}) {
	defer close(done)
	var missing missingTopics
	for err := range group.Errors() {
		w.log.Error("consumer group error", slog.Any("error", err))
		switch {
		case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
			if f := missing.check(admin, topics); f != nil {
				failed.set(f)
			}
		case errors.Is(err, sarama.ErrTopicAuthorizationFailed), errors.Is(err, sarama.ErrGroupAuthorizationFailed):
			// A fetch refused for want of Read: sarama reports it here
			// and retries it forever.
			var denied []string
			var ce *sarama.ConsumerError
			if errors.As(err, &ce) {
				denied = []string{ce.Topic}
			}
			failed.set(w.fatal(err, denied))
		}
	}
}

// fatalSignal holds the first *FatalError of a run; ch closes when it is set.
type fatalSignal struct {
	once sync.Once
	err  *FatalError
	ch   chan struct{}
}

func (s *fatalSignal) set(f *FatalError) {
	s.once.Do(func() {
		s.err = f
		close(s.ch)
	})
}

// get returns the error set, or nil (an untyped nil error).
func (s *fatalSignal) get() error {
	select {
	case <-s.ch:
		return s.err
	default:
		return nil
	}
}
