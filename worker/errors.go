package worker

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
)

// The errors Run and New return that a caller may want to tell apart, with
// errors.Is (ErrAlreadyRunning) and errors.As (*FatalError,
// *MissingTopicsError, *ValidationError).

// ErrAlreadyRunning is what Run returns when called a second time: a
// Worker runs once; create a new one with New.
var ErrAlreadyRunning = errors.New("kafkaworker: Run called twice: a Worker runs once; create a new one with New")

// MissingTopicsError names consumed topics that do not exist. Run returns
// it at start for source topics that do not exist, and wraps it in a
// *FatalError (whose Hint says what to do) when a consumed topic stays
// missing while the worker runs. errors.Is(err,
// sarama.ErrUnknownTopicOrPartition) holds for it.
type MissingTopicsError struct {
	Topics  []string // sorted
	running bool     // found missing while running, not at start
}

// Error names the topics; at start it also says how to create them.
func (e *MissingTopicsError) Error() string {
	quoted := make([]string, len(e.Topics))
	for i, t := range e.Topics {
		quoted[i] = strconv.Quote(t)
	}
	if e.running {
		return fmt.Sprintf("%v: %s", sarama.ErrUnknownTopicOrPartition, strings.Join(quoted, ", "))
	}
	what, it := "source topic does not exist", "it"
	if len(e.Topics) > 1 {
		what, it = "source topics do not exist", "them"
	}
	first := ""
	if len(e.Topics) > 0 {
		first = e.Topics[0]
	}
	return fmt.Sprintf("kafkaworker: %s: %s: create %s (e.g. kafka-topics.sh --create --topic %s --partitions <n>) or fix KAFKA_TOPICS",
		what, strings.Join(quoted, ", "), it, first)
}

// Unwrap makes errors.Is(err, sarama.ErrUnknownTopicOrPartition) hold.
func (e *MissingTopicsError) Unwrap() error { return sarama.ErrUnknownTopicOrPartition }

// sourceTopicsMissing is the one error for source topics that do not exist,
// whether or not retry topics are on.
func sourceTopicsMissing(missing []string) error {
	topics := slices.Clone(missing)
	slices.Sort(topics)
	return &MissingTopicsError{Topics: topics}
}

// FatalError is what Run returns when the group fails in a way that
// retrying cannot fix: the worker is not allowed to use the group or its
// topics, another instance holds its KAFKA_INSTANCE_ID, the group is full
// or speaks another protocol, or a consumed topic stays missing (then Err
// is a *MissingTopicsError). Run has shut down in the documented order
// before returning it. Test for it with errors.As; Err is the underlying
// error.
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
// operator should do, given the configuration and, for a topic
// authorization failure, the topics it was reported for (nil: not known).
// Everything else (a rebalance, a moving coordinator, a broker restart, a
// network error) is transient and retried forever.
var fatalHints = map[sarama.KError]func(c Config, topics []string) string{
	sarama.ErrGroupAuthorizationFailed: func(c Config, _ []string) string {
		return fmt.Sprintf("group authorization failed: %s may not read consumer group %q (KAFKA_GROUP_ID): grant it Read on the group, e.g. "+
			"kafka-acls.sh --bootstrap-server <broker> --add --allow-principal %s --operation Read --group %s",
			c.principal(), c.GroupID, c.principalArg(), c.GroupID)
	},
	sarama.ErrTopicAuthorizationFailed: func(c Config, topics []string) string {
		if len(topics) == 0 {
			topics = c.topology().Consumed()
		}
		cmds := make([]string, len(topics))
		quoted := make([]string, len(topics))
		for i, t := range topics {
			quoted[i] = strconv.Quote(t)
			cmds[i] = fmt.Sprintf("kafka-acls.sh --bootstrap-server <broker> --add --allow-principal %s --operation Read --topic %s", c.principalArg(), t)
		}
		return fmt.Sprintf("topic authorization failed: %s may not read %s: grant it Read (which implies Describe) on each, e.g. %s",
			c.principal(), strings.Join(quoted, ", "), strings.Join(cmds, "; "))
	},
	sarama.ErrClusterAuthorizationFailed: func(c Config, _ []string) string {
		return fmt.Sprintf("cluster authorization failed: grant %s the cluster permissions the worker needs (Describe; Create when RETRY_CREATE_TOPICS=true; IdempotentWrite from brokers before 2.8)", c.principal())
	},
	sarama.ErrSASLAuthenticationFailed: func(Config, []string) string {
		return "check the SASL mechanism, user name and password"
	},
	sarama.ErrInvalidGroupId: func(Config, []string) string { return "set KAFKA_GROUP_ID to a valid group name" },
	sarama.ErrFencedInstancedId: func(Config, []string) string {
		return "another running instance uses the same KAFKA_INSTANCE_ID: give each instance its own"
	},
	sarama.ErrGroupMaxSizeReached: func(Config, []string) string {
		return "the group has reached the broker's group.max.size: run fewer instances or raise the limit"
	},
	sarama.ErrInconsistentGroupProtocol: func(Config, []string) string {
		return "the group's other members use an incompatible rebalance strategy: use the same KAFKA_REBALANCE_STRATEGY everywhere (see the README for migrating)"
	},
	sarama.ErrUnsupportedVersion: func(Config, []string) string {
		return "the broker does not support this request version: set KAFKA_VERSION to the broker's version"
	},
}

// fatal returns a *FatalError when err cannot be cured by retrying, or nil.
// topics are those a topic authorization failure was reported for, if
// known.
func (w *Worker) fatal(err error, topics []string) *FatalError {
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		if hint, ok := fatalHints[kerr]; ok {
			f := &FatalError{Err: err, Hint: hint(w.cfg, topics)}
			if kerr == sarama.ErrGroupMaxSizeReached && w.sarama != nil && w.lazyTiers() {
				f.Hint += " (the retry tiers' group member is a second member of each instance while the tiers hold work: allow twice the instances)"
			}
			return f
		}
	}
	return nil
}

// principal names the worker's principal in messages: User:<name> with
// SASL PLAIN or SCRAM, otherwise a description.
func (c Config) principal() string {
	switch {
	case c.saslMechanism() != "" && c.saslMechanism() != SASLOAuthBearer && c.SASLUsername != "":
		return "User:" + c.SASLUsername
	case c.TLSCertFile != "":
		return "the worker's principal (the subject of KAFKA_TLS_CERT_FILE)"
	}
	return "the worker's principal"
}

// principalArg is principal for a kafka-acls.sh command line.
func (c Config) principalArg() string {
	if p := c.principal(); strings.HasPrefix(p, "User:") {
		return p
	}
	return "User:<worker>"
}
