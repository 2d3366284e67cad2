package main

import (
	"fmt"
	"strconv"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

func offsetsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "offsets",
		Short:   "Move a stopped group's committed offsets",
		Example: "  kafkaworker offsets reset orders-worker --topic orders --to 2026-01-02T15:00:00Z --dry-run",
	}
	cmd.AddCommand(offsetsResetCmd(g))
	return cmd
}

// resetRow is a partition in offsets reset's output.
type resetRow struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Before    *int64 `json:"before"` // null: no commit
	After     int64  `json:"after"`
	// DoneAhead is the size of the done-set the old commit carried, which
	// the reset clears.
	DoneAhead int64 `json:"done_cleared"`
}

type resetOpts struct {
	topic, to string
	partition int32
	dryRun    bool
	f         format
}

func offsetsResetCmd(g *globals) *cobra.Command {
	var o resetOpts
	cmd := &cobra.Command{
		Use:   "reset GROUP --topic T --to oldest|newest|OFFSET|TIME",
		Short: "Set a group's committed offsets on a topic (the group must have no members)",
		Long: `Set the committed offsets of GROUP on --topic, in every partition or the one
--partition names, to the oldest retained record, the end, an offset (kept within
what the partition holds), or the first record at or after an RFC 3339 time.
The group's workers read from there when they start again. The new commits carry
no done-set: a worker handles every record from the new offset on.

Kafka lets offsets be set only while a group has no members: stop the workers
first. --dry-run prints the before and after and changes nothing.`,
		Example: `  kafkaworker offsets reset orders-worker --topic orders --to oldest --dry-run
  kafkaworker offsets reset orders-worker --topic orders --to 2026-01-02T15:00:00Z
  kafkaworker offsets reset orders-worker --topic orders --partition 3 --to 1200`,
		Args:              exactArgs("GROUP"),
		ValidArgsFunction: g.completeGroups,
		RunE: func(cmd *cobra.Command, args []string) error {
			return resetOffsets(cmd, g, args[0], &o)
		},
	}
	cmd.Flags().StringVar(&o.topic, "topic", "", "topic whose offsets to set (required)")
	cmd.Flags().StringVar(&o.to, "to", "", "oldest, newest, an offset, or an RFC 3339 time (required)")
	cmd.Flags().Int32Var(&o.partition, "partition", -1, "only this partition (default: all)")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the before and after; change nothing")
	o.f.register(cmd)
	_ = cmd.MarkFlagRequired("topic")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func resetOffsets(cmd *cobra.Command, g *globals, group string, o *resetOpts) error {
	asJSON, err := o.f.json()
	if err != nil {
		return err
	}
	pos, err := parsePosition("--to", o.to)
	if err != nil {
		return err
	}
	c, err := g.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	desc, members, err := c.describeGroup(group)
	if err != nil {
		return err
	}
	if len(members) > 0 {
		return fmt.Errorf("group %q is %s with %d member(s): stop its workers first (Kafka refuses offsets from outside a group with members)", group, desc.State, len(members))
	}
	rows, err := c.resetPlan(group, o.topic, o.partition, pos)
	if err != nil {
		return err
	}
	if !o.dryRun {
		offsets := map[int32]sarama.OffsetAndMetadata{}
		for _, r := range rows {
			offsets[r.Partition] = sarama.OffsetAndMetadata{Offset: r.After, LeaderEpoch: -1}
		}
		if err := commitOffsets(c, group, o.topic, offsets); err != nil {
			return err
		}
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), rows)
	}
	return printReset(cmd, group, rows, o.dryRun)
}

// resetPlan computes each partition's offset before and after.
func (c *conn) resetPlan(group, topic string, partition int32, pos position) ([]resetRow, error) {
	parts, err := c.partitions(topic, partition)
	if err != nil {
		return nil, err
	}
	target, err := c.resolve(topic, parts, pos)
	if err != nil {
		return nil, err
	}
	commits, err := c.committedOffsets(group)
	if err != nil {
		return nil, err
	}
	var rows []resetRow
	for _, p := range parts {
		r := resetRow{Topic: topic, Partition: p, After: target[p]}
		if b, ok := commits[topic][p]; ok {
			before := b.Offset
			r.Before = &before
			r.DoneAhead = doneAhead(b)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func printReset(cmd *cobra.Command, group string, rows []resetRow, dryRun bool) error {
	w := cmd.OutOrStdout()
	t := table{header: []string{"TOPIC", "PARTITION", "BEFORE", "AFTER", "DONE-SET CLEARED"}}
	for _, r := range rows {
		t.add(r.Topic, strconv.Itoa(int(r.Partition)), optInt(r.Before), strconv.FormatInt(r.After, 10), strconv.FormatInt(r.DoneAhead, 10))
	}
	if err := t.print(w, 0); err != nil {
		return err
	}
	if dryRun {
		fmt.Fprintf(w, "\ndry run: group %s not changed\n", group)
		return nil
	}
	fmt.Fprintf(w, "\ngroup %s: %d partition(s) reset\n", group, len(rows))
	return nil
}
