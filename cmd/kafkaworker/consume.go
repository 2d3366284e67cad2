package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

// consumed is a record in consume's JSON output. Key, value and header
// values are {"text": ...} when the bytes are UTF-8 and {"base64": ...}
// (standard, padded) otherwise; a nil key or value is null.
type consumed struct {
	Topic     string       `json:"topic"`
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Timestamp time.Time    `json:"timestamp"`
	Key       *jsonBytes   `json:"key"`
	Value     *jsonBytes   `json:"value"`
	Headers   []jsonHeader `json:"headers"`
}

type jsonHeader struct {
	Key   string     `json:"key"`
	Value *jsonBytes `json:"value"`
}

func consumeCmd(g *globals) *cobra.Command {
	var (
		from      string
		partition int32
		count     int
		follow    bool
		outFormat string
	)
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print a topic's records, keys and values included",
		Long: `Print a topic's records, keys and values included, without joining or
committing to any group. Reading starts at --from in every partition (or the
one --partition names) and stops at the end offsets the topic had when the
command started, or after --count records; with --follow it waits for new
records until interrupted.

--format text prints one line per record: partition, offset, key, value, tab
separated, with non-text bytes and line breaks Go-quoted. --format json prints
one JSON object per line with topic, partition, offset, timestamp, key, value
and headers; every key, value and header value is {"text": "..."} when it is
valid UTF-8 and {"base64": "..."} (standard encoding) otherwise, null when absent.`,
		Example: `  kafkaworker consume orders --from oldest --count 10
  kafkaworker consume orders --partition 3 --from 1200 --format json | jq -r .value.text
  kafkaworker consume orders --from 2026-01-02T15:00:00Z --follow`,
		Args:              exactArgs("TOPIC"),
		ValidArgsFunction: g.completeTopics,
		RunE: func(cmd *cobra.Command, args []string) error {
			if outFormat != "text" && outFormat != "json" {
				return fmt.Errorf("--format %q: use text or json", outFormat)
			}
			if count < 0 {
				return fmt.Errorf("--count %d: must be 0 (no limit) or more", count)
			}
			pos, err := parsePosition("--from", from)
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			spec, err := c.rangeSpec(args[0], partition, pos, follow)
			if err != nil {
				return err
			}
			return consumeRecords(cmd, c, spec, count, outFormat == "json")
		},
	}
	cmd.Flags().StringVar(&from, "from", "oldest", "where to start: oldest, newest, an offset, or an RFC 3339 time")
	cmd.Flags().Int32Var(&partition, "partition", -1, "read only this partition (default: all)")
	cmd.Flags().IntVar(&count, "count", 0, "stop after this many records (0: no limit)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep waiting for new records instead of stopping at the end")
	cmd.Flags().StringVarP(&outFormat, "format", "o", "text", "output format: text or json")
	return cmd
}

// rangeSpec selects topic's partitions from pos to the current end.
func (c *conn) rangeSpec(topic string, partition int32, pos position, follow bool) (readSpec, error) {
	parts, err := c.partitions(topic, partition)
	if err != nil {
		return readSpec{}, err
	}
	start, err := c.resolve(topic, parts, pos)
	if err != nil {
		return readSpec{}, err
	}
	end, err := c.listOffsets(topic, parts, sarama.OffsetNewest)
	if err != nil {
		return readSpec{}, err
	}
	return readSpec{topic: topic, start: start, end: end, follow: follow}, nil
}

func consumeRecords(cmd *cobra.Command, c *conn, spec readSpec, count int, asJSON bool) error {
	w := cmd.OutOrStdout()
	n := 0
	err := c.read(cmd.Context(), spec, func(m *sarama.ConsumerMessage) error {
		if err := printRecord(w, m, asJSON); err != nil {
			return err
		}
		if n++; count > 0 && n >= count {
			return errStop
		}
		return nil
	})
	if cmd.Context().Err() != nil && spec.follow {
		return nil // interrupted while following: the normal way to stop
	}
	return err
}

func printRecord(w io.Writer, m *sarama.ConsumerMessage, asJSON bool) error {
	if !asJSON {
		_, err := fmt.Fprintf(w, "%d\t%d\t%s\t%s\n", m.Partition, m.Offset, printable(m.Key), printable(m.Value))
		return err
	}
	rec := consumed{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: m.Timestamp.UTC(),
		Key: encodeBytes(m.Key), Value: encodeBytes(m.Value), Headers: []jsonHeader{}}
	for _, h := range m.Headers {
		rec.Headers = append(rec.Headers, jsonHeader{Key: string(h.Key), Value: encodeBytes(h.Value)})
	}
	return printJSON(w, rec)
}

// offsetText is "topic/partition@offset".
func offsetText(topic string, p int32, off int64) string {
	return topic + "/" + strconv.Itoa(int(p)) + "@" + strconv.FormatInt(off, 10)
}
