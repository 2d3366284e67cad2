package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

// HeaderReplayedAt is the header dlq replay adds to every record it sends:
// when, in unix ms.
const HeaderReplayedAt = "kw-replayed-at"

// replayBatch is how many records are sent before progress is committed.
const replayBatch = 100

// replayConfig sets up the client that reads the dead letters and the
// replay group's offsets: read_committed, so a dead letter whose
// forwarding transaction aborted (a worker with exactly-once on) is not
// replayed, and the protocol of Kafka 2.5 at least, so OffsetFetch can ask
// for stable offsets (KIP-447).
func replayConfig(s *sarama.Config) {
	s.Consumer.IsolationLevel = sarama.ReadCommitted
	if !s.Version.IsAtLeast(sarama.V2_5_0_0) {
		s.Version = sarama.V2_5_0_0
	}
}

// replayOpts are dlq replay's flags.
type replayOpts struct {
	sel    selector
	to     string
	group  string
	rate   string
	dryRun bool
	f      format
}

func dlqReplayCmd(g *globals) *cobra.Command {
	var o replayOpts
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Send matching dead letters back to their original topic, each once",
		Long: `Send the dead letters that match the filters back to the topic they first came
from (kw-original-topic), or to --to. Each keeps its key, value and headers,
except that the kw-* failure headers are removed, so a worker treats it as a
fresh message, and a kw-replayed-at header (unix ms) is added. Keyed records go
to the partition their key hashes to, as the worker's producers send them.

Progress is committed in a replay consumer group, kafkaworker-replay.<dlq
topic> unless --replay-group names another: a second run of the same replay
sends nothing twice, and an interrupted one resumes where it stopped. The
group records how far through the dead-letter topic replay has read, the
records the filters skipped included: to replay those later with other
filters, pass a new --replay-group.

Exactly once: each batch (100 records; with --rate, what was sent in the
last second) and the replay group's progress are committed in one Kafka
transaction, so however a run ends (Ctrl-C, SIGKILL, a lost machine) a
consumer reading read_committed sees each dead letter once: a killed run's
open transaction is aborted when the replay runs again, and the new run
resumes from the last commit. A consumer reading read_uncommitted can also
see the records of aborted transactions. The dead-letter topic is read
read_committed: a dead letter of an aborted transaction is never replayed,
one of a transaction still open is left for the next run. The transactional.id is
"<replay group>:<dlq topic>"; a new run fences an older one still running,
which stops with an error saying so. An aborted transaction is sent again
(3 tries); a fatal error (fenced, not authorised) stops the replay.

A real cluster needs Kafka 2.5 or later; with ACLs, Write on the
TransactionalId (the prefix kafkaworker-replay. covers the default replay
groups; a transactional producer needs no IdempotentWrite on the cluster),
Write on the target topics, Read on the dead-letter topic and the replay
group; and, on a cluster of fewer than 3 brokers,
transaction.state.log.replication.factor and transaction.state.log.min.isr
set to at most the number of brokers, or no transaction can start.

--dry-run prints what would be sent and commits nothing. With --format json a
dry run prints one JSON object per dead letter (as dlq list's, with "to"), and
a replay one summary object.`,
		Example: `  kafkaworker dlq replay --topic orders --group orders-worker --error-type '*net.OpError' --dry-run
  kafkaworker dlq replay --topic orders --group orders-worker --error-type '*net.OpError' --rate 50/s
  kafkaworker dlq replay --dlq-topic orders.orders-worker.dlq --since 2026-01-02T15:00:00Z --to orders.reprocess`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := o.f.json(); err != nil {
				return err
			}
			c, err := g.connect(replayConfig)
			if err != nil {
				return err
			}
			defer c.Close()
			r, err := newReplayer(cmd, g, c, &o)
			if err != nil {
				return err
			}
			defer r.Close()
			return r.run()
		},
	}
	o.sel.register(cmd)
	cmd.Flags().StringVar(&o.to, "to", "", "send to this topic instead of each dead letter's original topic")
	cmd.Flags().StringVar(&o.group, "replay-group", "", "consumer group that records the replay's progress (default kafkaworker-replay.<dlq topic>)")
	cmd.Flags().StringVar(&o.rate, "rate", "", "send at most this many records per second, e.g. 50/s")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be sent; send and commit nothing")
	o.f.register(cmd)
	return cmd
}

// parseRate reads "50", "50/s" or "0.5/s" as records per second; "" is no
// limit.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseFloat(strings.TrimSuffix(s, "/s"), 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--rate %q: write records per second, e.g. 50/s", s)
	}
	return n, nil
}

// pacer spaces sends at a rate.
type pacer struct {
	interval time.Duration
	next     time.Time
}

// wait blocks until the next send is due, or the command is interrupted.
func (p *pacer) wait(cmd *cobra.Command) error {
	if p.interval == 0 {
		return nil
	}
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	d := p.next.Sub(now)
	p.next = p.next.Add(p.interval)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-cmd.Context().Done():
		return cmd.Context().Err()
	}
}

// replayMessage is what dlq replay sends for d: d's key, value and headers
// less the kw-* ones, plus kw-replayed-at.
func replayMessage(d deadLetter, to string, now time.Time) *sarama.ProducerMessage {
	if to == "" {
		to = d.info.OriginalTopic
	}
	m := &sarama.ProducerMessage{Topic: to, Value: sarama.ByteEncoder(d.msg.Value)}
	if d.msg.Key != nil {
		m.Key = sarama.ByteEncoder(d.msg.Key)
	}
	for _, h := range d.msg.Headers {
		if h != nil && !strings.HasPrefix(string(h.Key), "kw-") {
			m.Headers = append(m.Headers, *h)
		}
	}
	m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(HeaderReplayedAt), Value: []byte(strconv.FormatInt(now.UnixMilli(), 10))})
	return m
}
