package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

// maxLine is the longest stdin line produce accepts.
const maxLine = 16 << 20

// produceBatch is how many lines are sent per round trip.
const produceBatch = 500

func produceCmd(g *globals) *cobra.Command {
	var (
		keySep    string
		headers   []string
		partition int32
		verbose   bool
	)
	cmd := &cobra.Command{
		Use:   "produce TOPIC",
		Short: "Produce records from stdin, one per line",
		Long: `Produce records read from stdin, one per line (the line break is not part of
the value). With --key-separator each line is KEY<separator>VALUE, split at the
first separator; without it records have no key. Records with a key go to the
partition its hash picks, as the worker's producers do; --partition sends every
record to one partition. The producer is idempotent and waits for all in-sync
replicas.`,
		Example: `  echo 'hello' | kafkaworker produce orders
  printf 'k1:v1\nk2:v2\n' | kafkaworker produce orders --key-separator : -H source=cli -v`,
		Args:              exactArgs("TOPIC"),
		ValidArgsFunction: g.completeTopics,
		RunE: func(cmd *cobra.Command, args []string) error {
			hs, err := parseHeaders(headers)
			if err != nil {
				return err
			}
			c, err := g.connect(producerConfig(partition >= 0))
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.partitions(args[0], partition); err != nil {
				return err
			}
			p, err := sarama.NewSyncProducerFromClient(c.client)
			if err != nil {
				return fmt.Errorf("producer: %w", err)
			}
			defer func() { _ = p.Close() }()
			build := func(line string, n int) (*sarama.ProducerMessage, error) {
				return lineMessage(args[0], line, n, keySep, hs, partition)
			}
			sent, err := produceLines(cmd, p, build, verbose)
			if err != nil {
				return fmt.Errorf("%w (%d record(s) produced before it)", err, sent)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "produced %d record(s) to %s\n", sent, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&keySep, "key-separator", "", "split each line into KEY and VALUE at the first occurrence of this string")
	cmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "header key=value added to every record (repeatable)")
	cmd.Flags().Int32Var(&partition, "partition", -1, "send every record to this partition (default: by key)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the partition and offset of each record")
	return cmd
}

// producerConfig makes the client's producer idempotent and synchronous;
// manual sends to the message's partition instead of hashing the key.
func producerConfig(manual bool) func(*sarama.Config) {
	return func(s *sarama.Config) {
		s.Producer.Idempotent = true
		s.Producer.RequiredAcks = sarama.WaitForAll
		s.Producer.Retry.Max = 5
		s.Net.MaxOpenRequests = 1
		s.Producer.Return.Successes = true
		s.Producer.Return.Errors = true
		if !s.Version.IsAtLeast(sarama.V0_11_0_0) {
			s.Version = sarama.V0_11_0_0
		}
		if manual {
			s.Producer.Partitioner = sarama.NewManualPartitioner
		}
	}
}

// produceLines sends stdin's lines in batches and returns how many were
// acknowledged.
func produceLines(cmd *cobra.Command, p sarama.SyncProducer, build func(string, int) (*sarama.ProducerMessage, error), verbose bool) (int, error) {
	sc := bufio.NewScanner(cmd.InOrStdin())
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var batch []*sarama.ProducerMessage
	sent, n := 0, 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := p.SendMessages(batch); err != nil {
			return sendError(err)
		}
		for _, m := range batch {
			if verbose {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%d offset %d\n", m.Topic, m.Partition, m.Offset)
			}
		}
		sent += len(batch)
		batch = batch[:0]
		return nil
	}
	for sc.Scan() {
		n++
		m, err := build(sc.Text(), n)
		if err != nil {
			return sent, err
		}
		if batch = append(batch, m); len(batch) >= produceBatch {
			if err := flush(); err != nil {
				return sent, err
			}
		}
		if err := cmd.Context().Err(); err != nil {
			return sent, fmt.Errorf("interrupted after line %d", n)
		}
	}
	if err := sc.Err(); err != nil {
		return sent, fmt.Errorf("reading stdin after line %d: %w (lines are limited to %d MiB)", n, err, maxLine>>20)
	}
	return sent, flush()
}

// lineMessage turns stdin line n into a record.
func lineMessage(topic, line string, n int, keySep string, hs []sarama.RecordHeader, partition int32) (*sarama.ProducerMessage, error) {
	m := &sarama.ProducerMessage{Topic: topic, Headers: hs, Partition: partition}
	value := line
	if keySep != "" {
		k, v, ok := strings.Cut(line, keySep)
		if !ok {
			return nil, fmt.Errorf("line %d has no key separator %q: write KEY%sVALUE on every line", n, keySep, keySep)
		}
		m.Key, value = sarama.StringEncoder(k), v
	}
	m.Value = sarama.StringEncoder(value)
	return m, nil
}

// parseHeaders reads -H key=value flags.
func parseHeaders(kvs []string) ([]sarama.RecordHeader, error) {
	var out []sarama.RecordHeader
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-H %q: write key=value", kv)
		}
		out = append(out, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	return out, nil
}

// sendError summarises a SendMessages failure by its first error.
func sendError(err error) error {
	var pe sarama.ProducerErrors
	if errors.As(err, &pe) && len(pe) > 0 {
		return fmt.Errorf("%d record(s) not acknowledged, the first to %s/%d: %w", len(pe), pe[0].Msg.Topic, pe[0].Msg.Partition, pe[0].Err)
	}
	return fmt.Errorf("send: %w", err)
}
