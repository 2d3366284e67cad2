package main

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

func topicsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List, describe, create, grow and delete topics",
		Example: `  kafkaworker topics list
  kafkaworker topics describe orders
  kafkaworker topics create orders --partitions 12 --replication-factor 3 --config retention.ms=604800000`,
	}
	cmd.AddCommand(topicsListCmd(g), topicsDescribeCmd(g), topicsCreateCmd(g), topicsAddPartitionsCmd(g), topicsDeleteCmd(g))
	return cmd
}

// topicRow is a topic in topics list.
type topicRow struct {
	Name              string `json:"name"`
	Partitions        int32  `json:"partitions"`
	ReplicationFactor int16  `json:"replication_factor"`
}

func topicsListCmd(g *globals) *cobra.Command {
	var f format
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the topics with their partition count and replication factor",
		Example: "  kafkaworker topics list\n  kafkaworker topics list -o json | jq -r '.[].name'",
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
			topics, err := c.admin.ListTopics()
			if err != nil {
				return fmt.Errorf("list topics: %w", err)
			}
			rows := []topicRow{}
			for name, d := range topics {
				rows = append(rows, topicRow{name, d.NumPartitions, d.ReplicationFactor})
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			t := table{header: []string{"TOPIC", "PARTITIONS", "REPLICATION"}}
			for _, r := range rows {
				t.add(r.Name, strconv.Itoa(int(r.Partitions)), strconv.Itoa(int(r.ReplicationFactor)))
			}
			return t.print(cmd.OutOrStdout(), 0)
		},
	}
	f.register(cmd)
	return cmd
}

// topicDescription is topics describe's output.
type topicDescription struct {
	Name       string            `json:"name"`
	Partitions []partitionRow    `json:"partitions"`
	Configs    map[string]string `json:"configs"` // the ones set on the topic, not defaults
}

type partitionRow struct {
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	ISR       []int32 `json:"isr"`
	Oldest    int64   `json:"oldest_offset"`
	End       int64   `json:"end_offset"`
}

func topicsDescribeCmd(g *globals) *cobra.Command {
	var f format
	cmd := &cobra.Command{
		Use:               "describe TOPIC",
		Short:             "Show a topic's partitions (leader, replicas, offsets) and the configs set on it",
		Example:           "  kafkaworker topics describe orders\n  kafkaworker topics describe orders -o json",
		Args:              exactArgs("TOPIC"),
		ValidArgsFunction: g.completeTopics,
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
			d, err := c.describeTopic(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), d)
			}
			return printTopic(cmd, d)
		},
	}
	f.register(cmd)
	return cmd
}

func (c *conn) describeTopic(name string) (*topicDescription, error) {
	parts, err := c.partitions(name, -1)
	if err != nil {
		return nil, err
	}
	md, err := c.admin.DescribeTopics([]string{name})
	if err != nil || len(md) == 0 {
		return nil, fmt.Errorf("describe topic %q: %v", name, err)
	}
	oldest, end, err := c.bounds(name, parts)
	if err != nil {
		return nil, err
	}
	d := &topicDescription{Name: name, Configs: map[string]string{}}
	for _, p := range md[0].Partitions {
		d.Partitions = append(d.Partitions, partitionRow{p.ID, p.Leader, p.Replicas, p.Isr, oldest[p.ID], end[p.ID]})
	}
	sort.Slice(d.Partitions, func(i, j int) bool { return d.Partitions[i].Partition < d.Partitions[j].Partition })
	entries, err := c.admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: name})
	if err != nil {
		return nil, fmt.Errorf("configs of topic %q: %w", name, err)
	}
	for _, e := range entries {
		if !e.Default && e.Source != sarama.SourceDefault && e.Source != sarama.SourceStaticBroker && e.Source != sarama.SourceDynamicDefaultBroker {
			d.Configs[e.Name] = e.Value
		}
	}
	return d, nil
}

func printTopic(cmd *cobra.Command, d *topicDescription) error {
	w := cmd.OutOrStdout()
	t := table{header: []string{"PARTITION", "LEADER", "REPLICAS", "ISR", "OLDEST", "END", "RECORDS"}}
	for _, p := range d.Partitions {
		t.add(strconv.Itoa(int(p.Partition)), strconv.Itoa(int(p.Leader)), ints(p.Replicas), ints(p.ISR),
			strconv.FormatInt(p.Oldest, 10), strconv.FormatInt(p.End, 10), strconv.FormatInt(p.End-p.Oldest, 10))
	}
	fmt.Fprintf(w, "topic %s, %d partitions\n\n", d.Name, len(d.Partitions))
	if err := t.print(w, 0); err != nil {
		return err
	}
	if len(d.Configs) == 0 {
		fmt.Fprintln(w, "\nno configs set on the topic (broker defaults apply)")
		return nil
	}
	ct := table{header: []string{"CONFIG", "VALUE"}}
	for _, k := range sortedKeys(d.Configs) {
		ct.add(k, d.Configs[k])
	}
	fmt.Fprintln(w)
	return ct.print(w, 0)
}

func topicsCreateCmd(g *globals) *cobra.Command {
	var (
		partitions  int32
		replication int16
		configs     []string
	)
	cmd := &cobra.Command{
		Use:     "create TOPIC",
		Short:   "Create a topic",
		Example: "  kafkaworker topics create orders --partitions 12 --replication-factor 3\n  kafkaworker topics create orders.dlq --partitions 12 --replication-factor 3 --config retention.ms=-1",
		Args:    exactArgs("TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if partitions < 1 || replication < 1 {
				return fmt.Errorf("--partitions %d --replication-factor %d: both must be at least 1", partitions, replication)
			}
			entries, err := parseConfigs(configs)
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: replication, ConfigEntries: entries}
			if err := c.admin.CreateTopic(args[0], detail, false); err != nil {
				return fmt.Errorf("create topic %q: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created topic %s: %d partitions, replication factor %d\n", args[0], partitions, replication)
			return nil
		},
	}
	cmd.Flags().Int32Var(&partitions, "partitions", 0, "number of partitions (required)")
	cmd.Flags().Int16Var(&replication, "replication-factor", 0, "copies of each partition (required)")
	cmd.Flags().StringArrayVar(&configs, "config", nil, "topic config key=value (repeatable), e.g. retention.ms=604800000")
	_ = cmd.MarkFlagRequired("partitions")
	_ = cmd.MarkFlagRequired("replication-factor")
	return cmd
}

// parseConfigs reads key=value pairs.
func parseConfigs(kvs []string) (map[string]*string, error) {
	out := map[string]*string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--config %q: write key=value, e.g. retention.ms=604800000", kv)
		}
		out[k] = &v
	}
	return out, nil
}

func topicsAddPartitionsCmd(g *globals) *cobra.Command {
	var total int32
	cmd := &cobra.Command{
		Use:   "add-partitions TOPIC --total N",
		Short: "Grow a topic to N partitions (Kafka cannot remove partitions)",
		Long: `Grow a topic to N partitions. Kafka cannot remove partitions, and keys hash to
new partitions afterwards: a key's records before and after the change may sit
in different partitions. Workers pick new partitions up within
KAFKA_METADATA_REFRESH.`,
		Example:           "  kafkaworker topics add-partitions orders --total 24",
		Args:              exactArgs("TOPIC"),
		ValidArgsFunction: g.completeTopics,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			parts, err := c.partitions(args[0], -1)
			if err != nil {
				return err
			}
			if int(total) <= len(parts) {
				return fmt.Errorf("--total %d: topic %q has %d partitions already; pass a larger total (Kafka cannot remove partitions)", total, args[0], len(parts))
			}
			if err := c.admin.CreatePartitions(args[0], total, nil, false); err != nil {
				return fmt.Errorf("add partitions to %q: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "topic %s: %d partitions, was %d\n", args[0], total, len(parts))
			return nil
		},
	}
	cmd.Flags().Int32Var(&total, "total", 0, "partition count after the change (required)")
	_ = cmd.MarkFlagRequired("total")
	return cmd
}

func topicsDeleteCmd(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:               "delete TOPIC --yes",
		Short:             "Delete a topic and its records",
		Example:           "  kafkaworker topics delete orders.old --yes",
		Args:              exactArgs("TOPIC"),
		ValidArgsFunction: g.completeTopics,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.partitions(args[0], -1); err != nil {
				return err
			}
			if !yes {
				return fmt.Errorf("deleting topic %q destroys its records: pass --yes to confirm", args[0])
			}
			if err := c.admin.DeleteTopic(args[0]); err != nil {
				return fmt.Errorf("delete topic %q: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted topic %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	return cmd
}

// completeTopics completes a TOPIC argument from the cluster's topics.
func (g *globals) completeTopics(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return completeFirst(g, args, sarama.ClusterAdmin.ListTopics)
}

// completeGroups completes a GROUP argument from the cluster's groups.
func (g *globals) completeGroups(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return completeFirst(g, args, sarama.ClusterAdmin.ListConsumerGroups)
}

// completeFirst completes the first argument with the names list returns
// from the cluster, sorted; nothing when the cluster cannot be asked.
func completeFirst[V any](g *globals, args []string, list func(sarama.ClusterAdmin) (map[string]V, error)) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := g.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer c.Close()
	names, err := list(c.admin)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return sortedKeys(names), cobra.ShellCompDirectiveNoFileComp
}

func ints(xs []int32) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(int(x))
	}
	return strings.Join(s, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
