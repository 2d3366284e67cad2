// Package clientconf hands the tools in this module that talk to a
// worker's cluster without being a worker (the kafkaworker command) the
// worker's own connection settings: read from the environment, validated,
// and turned into a sarama configuration by the code path the worker uses.
//
// The loader lives in package worker, which owns the naming templates
// (DLQ_TOPIC_TEMPLATE); it reads the connection variables through the
// code every client shares (internal/envconf, kconn.Conn, as package
// producer does too) and registers itself here when it is linked in (the
// database/sql driver pattern), so that the helpers stay out of worker's
// public API. A tool imports worker, or blank-imports it, and calls
// FromEnv.
package clientconf

import (
	"errors"
	"sync"

	"github.com/IBM/sarama"
)

// Conn is what a tool needs to reach the cluster a worker reaches.
type Conn struct {
	// Brokers are the bootstrap addresses (KAFKA_BROKERS, or the
	// command's --brokers flag).
	Brokers []string
	// Sarama is the client configuration: client id, protocol version,
	// TLS and SASL as the worker sets them, automatic topic creation off.
	// The caller tunes it for its own use.
	Sarama *sarama.Config
	// DeadLetter names the dead-letter topic of source for group, by
	// DLQ_TOPIC_TEMPLATE.
	DeadLetter func(source, group string) string
}

// DLQTopic is the dead-letter topic of source for group.
func (c Conn) DLQTopic(source, group string) string { return c.DeadLetter(source, group) }

// Loader reads the connection settings from the process environment;
// brokers, when not empty, replaces KAFKA_BROKERS and
// KAFKA_BOOTSTRAP_SERVERS. Its errors name every offending variable.
type Loader func(brokers []string) (Conn, error)

var (
	mu     sync.Mutex
	loader Loader
)

// Register installs the loader; package worker calls it from init. A
// second call replaces the first.
func Register(l Loader) {
	mu.Lock()
	defer mu.Unlock()
	loader = l
}

// ErrNoLoader is FromEnv's error in a program that does not link package
// worker.
var ErrNoLoader = errors.New("clientconf: no loader registered: import github.com/kafkaworker/kafkaworker/worker")

// FromEnv reads the connection settings through the registered loader.
func FromEnv(brokers []string) (Conn, error) {
	mu.Lock()
	l := loader
	mu.Unlock()
	if l == nil {
		return Conn{}, ErrNoLoader
	}
	return l(brokers)
}
