package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/IBM/sarama"
)

// position is where to start reading or what to reset to: the oldest
// record, the end, an absolute offset, or the first record at or after a
// time.
type position struct {
	kind   string // "oldest", "newest", "offset", "time"
	offset int64
	at     time.Time
}

// parsePosition reads oldest, newest, an offset, or an RFC 3339 time.
func parsePosition(flag, s string) (position, error) {
	switch s {
	case "oldest", "newest":
		return position{kind: s}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return position{}, fmt.Errorf("%s %q: an offset cannot be negative: use oldest, newest, an offset or an RFC 3339 time", flag, s)
		}
		return position{kind: "offset", offset: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return position{}, fmt.Errorf("%s %q: not oldest, newest, an offset or an RFC 3339 time such as 2026-01-02T15:04:05Z", flag, s)
	}
	return position{kind: "time", at: t}, nil
}

// parseTime reads an RFC 3339 time, or a Go duration meaning that long ago
// (24h is a day ago).
func parseTime(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: not an RFC 3339 time such as 2026-01-02T15:04:05Z, nor a duration ago such as 24h", flag, s)
}

// partitions lists topic's partitions, or the one asked for (-1 for all),
// failing with a clear error when the topic or partition does not exist.
func (c *conn) partitions(topic string, only int32) ([]int32, error) {
	err := c.client.RefreshMetadata(topic)
	var parts []int32
	if err == nil {
		parts, err = c.client.Partitions(topic)
	}
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) || (err == nil && len(parts) == 0) {
		return nil, fmt.Errorf("topic %q does not exist: see kafkaworker topics list", topic)
	}
	if err != nil {
		return nil, fmt.Errorf("partitions of topic %q: %w", topic, err)
	}
	slices.Sort(parts)
	if only < 0 {
		return parts, nil
	}
	if !slices.Contains(parts, only) {
		return nil, fmt.Errorf("--partition %d: topic %q has partitions 0 to %d", only, topic, len(parts)-1)
	}
	return []int32{only}, nil
}

// listOffsets asks the partition leaders for one offset per partition:
// sarama.OffsetOldest, sarama.OffsetNewest, or a timestamp in ms (the first
// offset at or after it, -1 when there is none).
func (c *conn) listOffsets(topic string, parts []int32, query int64) (map[int32]int64, error) {
	req := map[int32]int64{}
	for _, p := range parts {
		req[p] = query
	}
	// A read_committed connection's end is the last stable offset: what
	// is past it is undecided, and its consumer gets none of it.
	opts := &sarama.ListOffsetsOptions{IsolationLevel: c.client.Config().Consumer.IsolationLevel}
	res, err := c.admin.ListOffsets(map[string]map[int32]int64{topic: req}, opts)
	if err != nil {
		return nil, fmt.Errorf("offsets of topic %q: %w", topic, err)
	}
	out := map[int32]int64{}
	for p, r := range res[topic] {
		if r.Err != nil && !errors.Is(r.Err, sarama.ErrNoError) {
			return nil, fmt.Errorf("offsets of %s/%d: %w", topic, p, r.Err)
		}
		out[p] = r.Offset
	}
	return out, nil
}

// bounds returns the oldest and end (next to be written) offsets.
func (c *conn) bounds(topic string, parts []int32) (oldest, end map[int32]int64, err error) {
	if oldest, err = c.listOffsets(topic, parts, sarama.OffsetOldest); err != nil {
		return nil, nil, err
	}
	if end, err = c.listOffsets(topic, parts, sarama.OffsetNewest); err != nil {
		return nil, nil, err
	}
	return oldest, end, nil
}

// resolve turns pos into an offset per partition, within [oldest, end]: an
// offset past the end is the end, one below the oldest retained record the
// oldest, and a time after the last record the end.
func (c *conn) resolve(topic string, parts []int32, pos position) (map[int32]int64, error) {
	oldest, end, err := c.bounds(topic, parts)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	switch pos.kind {
	case "oldest":
		return oldest, nil
	case "newest":
		return end, nil
	case "offset":
		for _, p := range parts {
			out[p] = min(max(pos.offset, oldest[p]), end[p])
		}
	case "time":
		at, err := c.listOffsets(topic, parts, pos.at.UnixMilli())
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if out[p] = at[p]; at[p] < 0 {
				out[p] = end[p]
			}
		}
	}
	return out, nil
}
