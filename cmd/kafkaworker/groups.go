package main

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

func groupsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "List consumer groups; show a group's members, lag and done-sets",
		Example: `  kafkaworker groups list
  kafkaworker groups describe orders-worker`,
	}
	cmd.AddCommand(groupsListCmd(g), groupsDescribeCmd(g))
	return cmd
}

// groupRow is a group in groups list.
type groupRow struct {
	Group   string `json:"group"`
	State   string `json:"state"`
	Members int    `json:"members"`
}

func groupsListCmd(g *globals) *cobra.Command {
	var f format
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the consumer groups with their state and member count",
		Example: "  kafkaworker groups list\n  kafkaworker groups list -o json",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := f.json()
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			rows, err := c.listGroups()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			t := table{header: []string{"GROUP", "STATE", "MEMBERS"}}
			for _, r := range rows {
				t.add(r.Group, r.State, strconv.Itoa(r.Members))
			}
			return t.print(cmd.OutOrStdout(), 0)
		},
	}
	f.register(cmd)
	return cmd
}

func (c *conn) listGroups() ([]groupRow, error) {
	groups, err := c.admin.ListConsumerGroups()
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	rows := []groupRow{}
	if len(groups) == 0 {
		return rows, nil
	}
	descs, err := c.admin.DescribeConsumerGroups(sortedKeys(groups))
	if err != nil {
		return nil, fmt.Errorf("describe groups: %w", err)
	}
	for _, d := range descs {
		rows = append(rows, groupRow{d.GroupId, d.State, len(d.Members)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Group < rows[j].Group })
	return rows, nil
}

// member is a group member in groups describe.
type member struct {
	MemberID   string             `json:"member_id"`
	InstanceID string             `json:"instance_id,omitempty"`
	ClientID   string             `json:"client_id"`
	Host       string             `json:"host"`
	Assignment map[string][]int32 `json:"assignment"`
}

// describeGroup returns the group's state and members; it fails naming the
// group when the cluster does not know it.
func (c *conn) describeGroup(group string) (*sarama.GroupDescription, []member, error) {
	descs, err := c.admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return nil, nil, fmt.Errorf("describe group %q: %w", group, err)
	}
	if len(descs) != 1 {
		return nil, nil, fmt.Errorf("describe group %q: no answer", group)
	}
	d := descs[0]
	if d.Err != sarama.ErrNoError && !errors.Is(d.Err, sarama.ErrGroupIDNotFound) {
		return nil, nil, fmt.Errorf("describe group %q: %w", group, d.Err)
	}
	var members []member
	for _, m := range d.Members {
		mm := member{MemberID: m.MemberId, ClientID: m.ClientId, Host: m.ClientHost, Assignment: map[string][]int32{}}
		if m.GroupInstanceId != nil {
			mm.InstanceID = *m.GroupInstanceId
		}
		if a, err := m.GetMemberAssignment(); err == nil && a != nil {
			for t, ps := range a.Topics {
				mm.Assignment[t] = append(mm.Assignment[t], ps...)
			}
		}
		members = append(members, mm)
	}
	sort.Slice(members, func(i, j int) bool { return members[i].MemberID < members[j].MemberID })
	return d, members, nil
}

// committedOffsets returns the group's commits (offset and metadata) by
// topic and partition, only partitions with a commit.
func (c *conn) committedOffsets(group string) (map[string]map[int32]*sarama.OffsetFetchResponseBlock, error) {
	resp, err := c.admin.ListConsumerGroupOffsets(group, nil)
	if errors.Is(err, sarama.ErrGroupIDNotFound) {
		return map[string]map[int32]*sarama.OffsetFetchResponseBlock{}, nil // never committed
	}
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %q: %w", group, err)
	}
	if resp.Err != sarama.ErrNoError && !errors.Is(resp.Err, sarama.ErrGroupIDNotFound) {
		return nil, fmt.Errorf("committed offsets of group %q: %w", group, resp.Err)
	}
	out := map[string]map[int32]*sarama.OffsetFetchResponseBlock{}
	for t, parts := range resp.Blocks {
		for p, b := range parts {
			if b == nil || b.Offset < 0 {
				continue
			}
			if b.Err != sarama.ErrNoError {
				return nil, fmt.Errorf("committed offset of group %q on %s/%d: %w", group, t, p, b.Err)
			}
			if out[t] == nil {
				out[t] = map[int32]*sarama.OffsetFetchResponseBlock{}
			}
			out[t][p] = b
		}
	}
	return out, nil
}

// assignmentText renders an assignment as "orders:0,1 orders.retry.1:0".
func assignmentText(a map[string][]int32) string {
	var parts []string
	for _, t := range sortedKeys(a) {
		ps := append([]int32(nil), a[t]...)
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		parts = append(parts, t+":"+ints(ps))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
