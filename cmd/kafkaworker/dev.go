package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

func devCmd() *cobra.Command {
	var (
		addr   string
		topics []string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded Kafka-protocol broker for local development",
		Long: `Run the embedded Kafka-protocol broker the project tests with (package
kafkatest, an in-process franz-go kfake cluster) on a fixed address, create the
--topic topics, print the KAFKA_BROKERS to export, and serve until interrupted
(Ctrl-C). Everything is kept in memory and lost on exit. With it a worker, such
as examples/embed, runs locally with nothing but Go.`,
		Example: `  kafkaworker dev --topic orders:4
  # in another shell:
  export KAFKA_BROKERS=127.0.0.1:9092 KAFKA_GROUP_ID=orders-worker KAFKA_TOPICS=orders
  go run ./examples/embed`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			specs, err := parseTopicSpecs(topics)
			if err != nil {
				return err
			}
			return serveDev(cmd, addr, specs)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9092", "host:port to listen on (port 0 picks a free one)")
	cmd.Flags().StringArrayVar(&topics, "topic", nil, "topic to create, name:partitions or name (1 partition); repeatable")
	return cmd
}

type topicSpec struct {
	name       string
	partitions int32
}

func parseTopicSpecs(in []string) ([]topicSpec, error) {
	var out []topicSpec
	for _, s := range in {
		name, n, hasN := strings.Cut(s, ":")
		spec := topicSpec{name: name, partitions: 1}
		if hasN {
			p, err := strconv.ParseInt(n, 10, 32)
			if err != nil || p < 1 {
				return nil, fmt.Errorf("--topic %q: write name:partitions with at least 1 partition, e.g. orders:4", s)
			}
			spec.partitions = int32(p)
		}
		if name == "" {
			return nil, fmt.Errorf("--topic %q: the topic name is empty: write name:partitions, e.g. orders:4", s)
		}
		out = append(out, spec)
	}
	return out, nil
}

// serveDev runs the broker until the command's context is done.
func serveDev(cmd *cobra.Command, addr string, topics []topicSpec) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w: stop what listens there or pass another --addr", addr, err)
	}
	// The broker advertises the address it listens on; listen where asked.
	listen := func(string, string) (net.Listener, error) { return ln, nil }
	cluster, err := kafkatest.NewCluster(kafkatest.WithKfakeOptions(kfake.ListenFn(listen), kfake.Ports(0)))
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer cluster.Close()
	for _, t := range topics {
		if err := cluster.CreateTopic(cmd.Context(), t.name, t.partitions); err != nil {
			return fmt.Errorf("create topic %s: %w", t.name, err)
		}
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "embedded broker listening on %s", strings.Join(cluster.Addrs(), ","))
	for i, t := range topics {
		sep := ", topics "
		if i > 0 {
			sep = ", "
		}
		fmt.Fprintf(w, "%s%s (%d partitions)", sep, t.name, t.partitions)
	}
	fmt.Fprintf(w, "\n\nexport KAFKA_BROKERS=%s\n\nCtrl-C stops it; nothing is kept.\n", strings.Join(cluster.Addrs(), ","))
	<-cmd.Context().Done()
	fmt.Fprintln(cmd.ErrOrStderr(), "stopping the embedded broker")
	return nil
}
