package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// missingTopicChecks is how many failed sessions in a row, spanning at
// least missingTopicFor, must find a consumed topic missing before Run
// gives up: a topic being re-created, or metadata lagging behind a topic
// just created, is waited out.
const (
	missingTopicChecks = 3
	missingTopicFor    = 5 * time.Second
)

// FatalError is what Run returns when the group fails in a way that
// retrying cannot fix: the worker is not allowed to use the group or its
// topics, another instance holds its KAFKA_INSTANCE_ID, the group is full
// or speaks another protocol, or a consumed topic stays missing. Run has
// shut down in the documented order before returning it. Test for it with
// errors.As; Err is the underlying error.
type FatalError struct {
	Err error
	// What to do about it, for the operator.
	Hint string
}

// Error says what failed and what to do.
func (e *FatalError) Error() string {
	return fmt.Sprintf("kafkaworker: consumer group failed for good: %v: %s", e.Err, e.Hint)
}

func (e *FatalError) Unwrap() error { return e.Err }

// fatalHints maps the Kafka errors that no retry can cure to what the
// operator should do. Everything else (a rebalance, a moving coordinator,
// a broker restart, a network error) is transient and retried forever.
var fatalHints = map[sarama.KError]string{
	sarama.ErrGroupAuthorizationFailed:   "grant this principal READ on the consumer group (KAFKA_GROUP_ID)",
	sarama.ErrTopicAuthorizationFailed:   "grant this principal READ and DESCRIBE on every topic in KAFKA_TOPICS and its retry topics",
	sarama.ErrClusterAuthorizationFailed: "grant this principal the cluster permissions the worker needs (DESCRIBE; CREATE when RETRY_CREATE_TOPICS=true)",
	sarama.ErrSASLAuthenticationFailed:   "check the SASL mechanism, user name and password",
	sarama.ErrInvalidGroupId:             "set KAFKA_GROUP_ID to a valid group name",
	sarama.ErrFencedInstancedId:          "another running instance uses the same KAFKA_INSTANCE_ID: give each instance its own",
	sarama.ErrGroupMaxSizeReached:        "the group has reached the broker's group.max.size: run fewer instances or raise the limit",
	sarama.ErrInconsistentGroupProtocol:  "the group's other members use an incompatible rebalance strategy: use the same KAFKA_REBALANCE_STRATEGY everywhere (see the README for migrating)",
	sarama.ErrUnsupportedVersion:         "the broker does not support this request version: set KAFKA_VERSION to the broker's version",
}

// fatal returns a *FatalError when err cannot be cured by retrying, or nil.
func fatal(err error) *FatalError {
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		if hint, ok := fatalHints[kerr]; ok {
			return &FatalError{Err: err, Hint: hint}
		}
	}
	return nil
}

// consume calls Consume until ctx is done: an eager rebalance ends each
// call, and transient errors are logged and retried with a capped backoff.
// It returns a *FatalError for a failure that retrying cannot fix, and
// nil once ctx is done.
func (w *Worker) consume(ctx, consumeCtx context.Context, group sarama.ConsumerGroup, gh *groupHandler) *FatalError {
	delay := 100 * time.Millisecond
	var missing missingTopics
	for ctx.Err() == nil {
		err := group.Consume(consumeCtx, gh.topo.consumed(), gh)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			delay = 100 * time.Millisecond
			missing = missingTopics{}
			continue
		}
		if f := fatal(err); f != nil {
			return f
		}
		if f := missing.check(gh.admin, gh.topo.consumed()); f != nil {
			return f
		}
		w.log.Warn("consumer group session failed; rejoining", slog.Any("error", err), slog.Duration("retry_in", delay))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
	return nil
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

// missingTopics tracks consumed topics found missing after failed sessions.
type missingTopics struct {
	since  time.Time
	checks int
}

// check lists the topics and returns a *FatalError once some have been
// missing missingTopicChecks times in a row over missingTopicFor.
func (m *missingTopics) check(admin sarama.ClusterAdmin, topics []string) *FatalError {
	existing, err := admin.ListTopics()
	if err != nil {
		return nil // cannot tell; the session is retried
	}
	var gone []string
	for _, t := range topics {
		if _, ok := existing[t]; !ok {
			gone = append(gone, t)
		}
	}
	if len(gone) == 0 {
		*m = missingTopics{}
		return nil
	}
	if m.checks == 0 {
		m.since = time.Now()
	}
	m.checks++
	if m.checks < missingTopicChecks || time.Since(m.since) < missingTopicFor {
		return nil
	}
	slices.Sort(gone)
	quoted := make([]string, len(gone))
	for i, t := range gone {
		quoted[i] = strconv.Quote(t)
	}
	return &FatalError{
		Err:  fmt.Errorf("%w: %s", sarama.ErrUnknownTopicOrPartition, strings.Join(quoted, ", ")),
		Hint: fmt.Sprintf("these consumed topics have not existed for %v: create them or fix KAFKA_TOPICS", time.Since(m.since).Round(time.Second)),
	}
}
