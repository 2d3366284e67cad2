package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/kafkaworker/kafkaworker/retry"
)

func dlqCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect the dead-letter topic and replay what is in it",
		Long: `Inspect a worker's dead-letter topic through the kw-* headers the worker writes
on every dead letter (original topic, partition and offset, attempts, error type
and text, time of the failure), and replay dead letters to their original topic
once the cause is fixed.

The dead-letter topic is --dlq-topic, or the one a worker of --group consuming
--topic writes to: DLQ_TOPIC_TEMPLATE, {topic}.{group}.dlq by default.`,
		Example: `  kafkaworker dlq list --topic orders --group orders-worker
  kafkaworker dlq replay --topic orders --group orders-worker --error-type '*net.OpError'`,
	}
	cmd.AddCommand(dlqListCmd(g), dlqReplayCmd(g))
	return cmd
}

// selector picks a dead-letter topic and, within it, the dead letters.
type selector struct {
	source, group, dlqTopic string
	errorType, key          string
	since, until            string
	sinceT, untilT          time.Time
}

func (s *selector) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.source, "topic", "", "source topic the worker consumes (with --group)")
	f.StringVar(&s.group, "group", "", "the worker's consumer group (with --topic)")
	f.StringVar(&s.dlqTopic, "dlq-topic", "", "the dead-letter topic itself, instead of --topic and --group")
	f.StringVar(&s.errorType, "error-type", "", "only dead letters with this kw-error-type, e.g. panic, timeout, *net.OpError")
	f.StringVar(&s.key, "key", "", "only dead letters with this key")
	f.StringVar(&s.since, "since", "", "only dead letters that failed at or after this RFC 3339 time, or this long ago (24h)")
	f.StringVar(&s.until, "until", "", "only dead letters that failed before this RFC 3339 time, or this long ago")
}

// resolve checks the flags and returns the dead-letter topic's name.
func (s *selector) resolve(c *conn, now time.Time) (string, error) {
	var err error
	if s.since != "" {
		if s.sinceT, err = parseTime("--since", s.since, now); err != nil {
			return "", err
		}
	}
	if s.until != "" {
		if s.untilT, err = parseTime("--until", s.until, now); err != nil {
			return "", err
		}
	}
	switch {
	case s.dlqTopic != "" && (s.source != "" || s.group != ""):
		return "", errors.New("--dlq-topic names the topic itself: do not combine it with --topic and --group")
	case s.dlqTopic != "":
		return s.dlqTopic, nil
	case s.source == "" || s.group == "":
		return "", errors.New("which dead-letter topic? pass --topic SOURCE and --group GROUP, or --dlq-topic NAME")
	}
	return c.cfg.DLQTopic(s.source, s.group), nil
}

// match reports whether a dead letter passes the filters.
func (s *selector) match(info retry.Info, key []byte) bool {
	switch {
	case s.errorType != "" && info.ErrorType != s.errorType:
		return false
	case s.key != "" && string(key) != s.key:
		return false
	case !s.sinceT.IsZero() && info.FailedAt.Before(s.sinceT):
		return false
	case !s.untilT.IsZero() && !info.FailedAt.Before(s.untilT):
		return false
	}
	return true
}

// deadLetter is a record of the dead-letter topic with its kw-* headers
// read.
type deadLetter struct {
	msg  *sarama.ConsumerMessage
	info retry.Info
}

// errNotDLQ is scanDLQ's error when no record read carries kw-* headers.
var errNotDLQ = errors.New("not a kafkaworker dead-letter topic")

// scanDLQ reads the dead-letter topic from start to its current end and
// hands fn every dead letter the selector matches, in offset order within
// each partition. A record without kw-* headers (not written by a worker)
// is skipped, and one warning line on warn counts them; when every record
// lacks them the topic is not a worker's dead-letter topic and scanDLQ
// fails with errNotDLQ, naming the first. after, when not nil, is called for
// every record read, once fn has seen it.
func scanDLQ(ctx context.Context, c *conn, s *selector, spec readSpec, warn io.Writer, after func(*sarama.ConsumerMessage) error, fn func(deadLetter) error) (seen, matched int, err error) {
	foreign, first := 0, ""
	err = c.read(ctx, spec, func(m *sarama.ConsumerMessage) error {
		seen++
		info, ok := retry.ReadInfo(headersOf(m))
		switch {
		case !ok:
			if foreign++; first == "" {
				first = offsetText(m.Topic, m.Partition, m.Offset)
			}
		case s.match(info, m.Key):
			matched++
			if err := fn(deadLetter{m, info}); err != nil {
				return err
			}
		}
		if after != nil {
			return after(m)
		}
		return nil
	})
	switch {
	case seen > 0 && foreign == seen:
		return seen, matched, fmt.Errorf("none of the %d record(s) read from %s carries kw-* headers (the first: %s): %w (check --dlq-topic, or --topic and --group)", seen, spec.topic, first, errNotDLQ)
	case foreign > 0:
		fmt.Fprintf(warn, "kafkaworker: warning: skipped %d record(s) without kw-* headers (not dead-lettered by a kafkaworker worker), the first %s\n", foreign, first)
	}
	return seen, matched, err
}

// deadLetterJSON is a dead letter in dlq list's JSON output.
type deadLetterJSON struct {
	DLQTopic          string     `json:"dlq_topic"`
	DLQPartition      int32      `json:"dlq_partition"`
	DLQOffset         int64      `json:"dlq_offset"`
	OriginalTopic     string     `json:"original_topic"`
	OriginalPartition int32      `json:"original_partition"`
	OriginalOffset    int64      `json:"original_offset"`
	Group             string     `json:"group"`
	Attempts          int        `json:"attempts"`
	ErrorType         string     `json:"error_type"`
	Error             string     `json:"error"`
	FailedAt          time.Time  `json:"failed_at"`
	Key               *jsonBytes `json:"key"`
	Value             *jsonBytes `json:"value,omitempty"` // only with --values
}

func toJSON(d deadLetter, values bool) deadLetterJSON {
	j := deadLetterJSON{DLQTopic: d.msg.Topic, DLQPartition: d.msg.Partition, DLQOffset: d.msg.Offset,
		OriginalTopic: d.info.OriginalTopic, OriginalPartition: d.info.OriginalPartition, OriginalOffset: d.info.OriginalOffset,
		Group: d.info.Group, Attempts: d.info.Attempt, ErrorType: d.info.ErrorType, Error: d.info.Error,
		FailedAt: d.info.FailedAt.UTC(), Key: encodeBytes(d.msg.Key)}
	if values {
		j.Value = encodeBytes(d.msg.Value)
	}
	return j
}

// row is a dead letter in dlq list's table; the error text comes last, as
// it is cut to the terminal width.
func row(d deadLetter, values bool) []string {
	cells := []string{
		strconv.Itoa(int(d.msg.Partition)) + "@" + strconv.FormatInt(d.msg.Offset, 10),
		offsetText(d.info.OriginalTopic, d.info.OriginalPartition, d.info.OriginalOffset),
		strconv.Itoa(d.info.Attempt), dash(d.info.ErrorType), timeText(d.info.FailedAt), printable(d.msg.Key),
	}
	if values {
		cells = append(cells, printable(d.msg.Value))
	}
	return append(cells, oneLineText(dash(d.info.Error)))
}

// sortDeadLetters orders dead letters by DLQ partition, then offset (they
// are read from all partitions at once).
func sortDeadLetters(ds []deadLetter) []deadLetter {
	sort.Slice(ds, func(i, j int) bool {
		a, b := ds[i].msg, ds[j].msg
		return a.Partition < b.Partition || (a.Partition == b.Partition && a.Offset < b.Offset)
	})
	return ds
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
