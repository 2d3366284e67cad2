package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/kafkaworker/kafkaworker/internal/doneset"
)

// groupDescription is groups describe's output.
type groupDescription struct {
	Group      string        `json:"group"`
	State      string        `json:"state"`
	Protocol   string        `json:"protocol"`
	Members    []member      `json:"members"`
	Partitions []partLag     `json:"partitions"`
	Totals     []topicTotals `json:"totals"`
}

// partLag is one partition the group committed on or is assigned.
type partLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Committed *int64 `json:"committed"` // null: no commit yet
	End       int64  `json:"end"`
	Lag       *int64 `json:"lag"` // end - committed; null without a commit
	// DoneAhead is how many offsets at or above the commit a worker
	// finished already (the done-set in the commit metadata): a restart
	// skips them. DoneRanges lists them as [start, end) ranges.
	DoneAhead  int64           `json:"done_ahead"`
	DoneRanges []doneset.Range `json:"done_ranges"`
	DoneError  string          `json:"done_error,omitempty"` // a done-set that does not parse: everything is handled again
	Member     string          `json:"member,omitempty"`     // client id of the member assigned the partition
}

// topicTotals sums a topic's partitions.
type topicTotals struct {
	Topic      string `json:"topic"`
	Lag        int64  `json:"lag"`
	DoneAhead  int64  `json:"done_ahead"`
	DoneRanges int    `json:"done_ranges"`
	// ToHandle is what a worker resuming now still has to handle: the lag
	// less what the done-sets let it skip.
	ToHandle int64 `json:"to_handle"`
}

func groupsDescribeCmd(g *globals) *cobra.Command {
	var f format
	cmd := &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a group's state, members, and per partition the commit, lag and done-set",
		Long: `Show a group's state and members (client id, host, assignment) and, for every
partition the group committed on or is assigned: the committed offset, the end
offset, the lag, and the done-set a kafkaworker worker keeps in the commit
metadata, decoded. The done-set holds offsets above the commit that were
already handled (later keys finished while an earlier one was still running):
a worker that resumes at the commit skips them. Totals per topic follow.`,
		Example:           "  kafkaworker groups describe orders-worker\n  kafkaworker groups describe orders-worker -o json | jq '.totals'",
		Args:              exactArgs("GROUP"),
		ValidArgsFunction: g.completeGroups,
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := f.json()
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			d, err := c.groupLag(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), d)
			}
			return printGroup(cmd.OutOrStdout(), d)
		},
	}
	f.register(cmd)
	return cmd
}

// groupLag gathers groups describe's output.
func (c *conn) groupLag(group string) (*groupDescription, error) {
	desc, members, err := c.describeGroup(group)
	if err != nil {
		return nil, err
	}
	commits, err := c.committedOffsets(group)
	if err != nil {
		return nil, err
	}
	if len(commits) == 0 && len(members) == 0 && (desc.State == "Dead" || desc.State == "") {
		return nil, fmt.Errorf("group %q does not exist (no members, no commits): see kafkaworker groups list", group)
	}
	owner := map[string]map[int32]string{}
	for _, m := range members {
		for t, ps := range m.Assignment {
			if owner[t] == nil {
				owner[t] = map[int32]string{}
			}
			for _, p := range ps {
				owner[t][p] = m.ClientID
			}
		}
	}
	d := &groupDescription{Group: group, State: desc.State, Protocol: desc.Protocol, Members: members}
	for _, topic := range sortedKeys(union(commits, owner)) {
		rows, err := c.topicLag(topic, commits[topic], owner[topic])
		if err != nil {
			return nil, err
		}
		d.Partitions = append(d.Partitions, rows...)
		d.Totals = append(d.Totals, totals(topic, rows))
	}
	if d.Members == nil {
		d.Members = []member{}
	}
	return d, nil
}

// topicLag builds the rows of one topic.
func (c *conn) topicLag(topic string, commits map[int32]*sarama.OffsetFetchResponseBlock, owners map[int32]string) ([]partLag, error) {
	set := map[int32]bool{}
	for p := range commits {
		set[p] = true
	}
	for p := range owners {
		set[p] = true
	}
	parts := make([]int32, 0, len(set))
	for p := range set {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	end, err := c.listOffsets(topic, parts, sarama.OffsetNewest)
	if err != nil {
		return nil, err
	}
	var rows []partLag
	for _, p := range parts {
		r := partLag{Topic: topic, Partition: p, End: end[p], Member: owners[p], DoneRanges: []doneset.Range{}}
		if b, ok := commits[p]; ok {
			committed, lag := b.Offset, max(end[p]-b.Offset, 0)
			r.Committed, r.Lag = &committed, &lag
			done, err := doneset.Decode(b.Metadata)
			if err != nil {
				r.DoneError = err.Error()
			} else if above := done.Above(committed); len(above) > 0 {
				r.DoneAhead, r.DoneRanges = above.Count(), above
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// doneAhead is the size of the done-set above the commit b carries, 0 when
// it has none or it does not parse.
func doneAhead(b *sarama.OffsetFetchResponseBlock) int64 {
	done, err := doneset.Decode(b.Metadata)
	if err != nil {
		return 0
	}
	return done.Above(b.Offset).Count()
}

func totals(topic string, rows []partLag) topicTotals {
	t := topicTotals{Topic: topic}
	for _, r := range rows {
		if r.Lag != nil {
			t.Lag += *r.Lag
		}
		t.DoneAhead += r.DoneAhead
		t.DoneRanges += len(r.DoneRanges)
	}
	t.ToHandle = max(t.Lag-t.DoneAhead, 0)
	return t
}

func union[A, B any](a map[string]A, b map[string]B) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func printGroup(w io.Writer, d *groupDescription) error {
	fmt.Fprintf(w, "group %s: %s, %d member(s)\n\n", d.Group, d.State, len(d.Members))
	if len(d.Members) > 0 {
		mt := table{header: []string{"CLIENT ID", "HOST", "INSTANCE", "ASSIGNMENT", "MEMBER ID"}}
		for _, m := range d.Members {
			mt.add(m.ClientID, m.Host, dash(m.InstanceID), assignmentText(m.Assignment), m.MemberID)
		}
		if err := mt.print(w, 0); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	pt := table{header: []string{"TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "DONE AHEAD OF COMMIT", "MEMBER"}}
	for _, r := range d.Partitions {
		pt.add(r.Topic, strconv.Itoa(int(r.Partition)), optInt(r.Committed), strconv.FormatInt(r.End, 10), optInt(r.Lag), doneText(r), dash(r.Member))
	}
	if err := pt.print(w, 0); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, t := range d.Totals {
		fmt.Fprintf(w, "%s: lag %d; %d finished ahead of the commit, in %d range(s), which a restart skips; %d to handle\n",
			t.Topic, t.Lag, t.DoneAhead, t.DoneRanges, t.ToHandle)
	}
	return nil
}

// doneText is the done-set column: "37 in 2 ranges".
func doneText(r partLag) string {
	switch {
	case r.DoneError != "":
		return "unreadable (handled again)"
	case r.DoneAhead == 0:
		return "-"
	case len(r.DoneRanges) == 1:
		return fmt.Sprintf("%d in 1 range", r.DoneAhead)
	}
	return fmt.Sprintf("%d in %d ranges", r.DoneAhead, len(r.DoneRanges))
}

func optInt(p *int64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatInt(*p, 10)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
