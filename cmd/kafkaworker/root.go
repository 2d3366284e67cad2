package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/kafkaworker/kafkaworker/internal/clientconf"
	"github.com/kafkaworker/kafkaworker/worker"
)

// globals are the flags every command shares.
type globals struct {
	brokers []string
}

// newRoot builds the command tree. Each call returns a fresh tree, so tests
// run commands in process without flags leaking from one run to the next.
func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "kafkaworker",
		Short: "Operate a kafkaworker fleet: topics, groups and lag, dead letters and replay, a local broker",
		Long: `kafkaworker answers the everyday questions about a fleet of kafkaworker workers:
how far behind is a group, what is stuck, what landed in the dead-letter topic
and why, and how to send it back once the bug is fixed.

It connects with the worker's own settings: KAFKA_BROKERS (or
KAFKA_BOOTSTRAP_SERVERS), KAFKA_CLIENT_ID, KAFKA_VERSION and the KAFKA_TLS_* and
KAFKA_SASL_* variables; --brokers overrides the addresses. Message payloads are
printed only by consume and by dlq list --values.`,
		Example: `  export KAFKA_BROKERS=localhost:9092
  kafkaworker groups describe orders-worker
  kafkaworker dlq list --topic orders --group orders-worker
  kafkaworker dev --topic orders:4`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringSliceVar(&g.brokers, "brokers", nil,
		"comma-separated host:port of the brokers (default $KAFKA_BROKERS)")
	root.AddCommand(topicsCmd(g), groupsCmd(g), produceCmd(g), consumeCmd(g),
		dlqCmd(g), offsetsCmd(g), devCmd())
	return root
}

// conn is an open connection to the cluster: a client and an admin on it.
type conn struct {
	cfg    clientconf.Conn
	client sarama.Client
	admin  sarama.ClusterAdmin
}

// connect opens a client with the worker's connection settings, adjusted by
// tune (for a producer's needs) before sarama validates them.
func (g *globals) connect(tune ...func(*sarama.Config)) (*conn, error) {
	cfg, err := g.clientConn()
	if err != nil {
		return nil, err
	}
	for _, t := range tune {
		t(cfg.Sarama)
	}
	client, err := sarama.NewClient(cfg.Brokers, cfg.Sarama)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the brokers %s: %w: check --brokers or KAFKA_BROKERS", strings.Join(cfg.Brokers, ","), err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("admin client: %w", err)
	}
	return &conn{cfg: cfg, client: client, admin: admin}, nil
}

// clientConn reads the connection settings (the flag, then the
// environment) and builds sarama's configuration the worker's way, tuned
// for an interactive command.
func (g *globals) clientConn() (clientconf.Conn, error) {
	cfg, err := clientconf.FromEnv(g.brokers)
	if err != nil {
		var ve *worker.ValidationError
		if errors.As(err, &ve) && len(ve.Problems) == 1 && strings.HasPrefix(ve.Problems[0], "KAFKA_BROKERS: missing") {
			return clientconf.Conn{}, errors.New("no brokers: pass --brokers host:port or set KAFKA_BROKERS")
		}
		return clientconf.Conn{}, err
	}
	s := cfg.Sarama
	// A command is interactive: fail within seconds, not sarama's 30s.
	s.Net.DialTimeout = 10 * time.Second
	s.Metadata.Retry.Max = 2
	s.Metadata.Retry.Backoff = 100 * time.Millisecond
	// Reading stops at the end offsets: do not wait long for more.
	s.Consumer.MaxWaitTime = 100 * time.Millisecond
	return cfg, nil
}

// Close closes the admin and, with it, the client.
func (c *conn) Close() { _ = c.admin.Close() }

// exactArgs is cobra.ExactArgs with an error that names what is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(args) < len(names) {
			return fmt.Errorf("missing %s: see %s --help", strings.Join(names[len(args):], " "), cmd.CommandPath())
		}
		extra := strings.Join(args[len(names):], " ")
		if len(names) == 0 {
			return fmt.Errorf("unexpected argument %q: %s takes none; see %s --help", extra, cmd.CommandPath(), cmd.CommandPath())
		}
		return fmt.Errorf("unexpected argument %q: %s takes %s; see %s --help", extra, cmd.CommandPath(), strings.Join(names, " "), cmd.CommandPath())
	}
}
