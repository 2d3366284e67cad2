package engine

import (
	"fmt"

	"github.com/IBM/sarama"
)

// TiersHoldWork reports whether a partition of the given retry-tier topics
// holds records the group has not consumed: its end offset is past both
// its committed offset and its oldest offset (a partition whose records
// retention deleted holds none). It asks the brokers for the partitions'
// committed offsets in one request and their newest offsets in one per
// leader (the oldest only of those past their committed offset), through
// client (the committer's: a JoinGroup parked on
// the group's connection would hold them up). An error means it could not
// tell.
func TiersHoldWork(client sarama.Client, group string, topics []string) (bool, error) {
	parts := map[string][]int32{}
	byLeader := map[*sarama.Broker][]topicPartition{}
	for _, topic := range topics {
		ids, err := client.Partitions(topic)
		if err != nil {
			return false, fmt.Errorf("partitions of %s: %w", topic, err)
		}
		parts[topic] = ids
		for _, id := range ids {
			b, err := client.Leader(topic, id)
			if err != nil {
				return false, fmt.Errorf("leader of %s/%d: %w", topic, id, err)
			}
			byLeader[b] = append(byLeader[b], topicPartition{topic, id})
		}
	}
	version := client.Config().Version
	coordinator, err := client.Coordinator(group)
	if err != nil {
		return false, fmt.Errorf("group coordinator: %w", err)
	}
	resp, err := coordinator.FetchOffset(sarama.NewOffsetFetchRequest(version, group, parts))
	if err != nil {
		_ = client.RefreshCoordinator(group)
		return false, fmt.Errorf("committed offsets: %w", err)
	}
	noGroup := resp.Err == sarama.ErrGroupIDNotFound // nothing committed yet
	if resp.Err != sarama.ErrNoError && !noGroup {
		return false, fmt.Errorf("committed offsets: %w", resp.Err)
	}
	for b, tps := range byLeader {
		newest, err := listOffsets(version, b, tps, sarama.OffsetNewest)
		if err != nil {
			return false, fmt.Errorf("newest offsets: %w", err)
		}
		var past []topicPartition // end offset past the committed one
		for _, tp := range tps {
			end, ok := newest[tp]
			if !ok {
				return false, fmt.Errorf("end offset of %s/%d: not in the answer", tp.topic, tp.partition)
			}
			blk := resp.GetBlock(tp.topic, tp.partition)
			switch {
			case noGroup:
				blk = &sarama.OffsetFetchResponseBlock{Offset: -1}
			case blk == nil:
				return false, fmt.Errorf("committed offset of %s/%d: not in the answer", tp.topic, tp.partition)
			case blk.Err != sarama.ErrNoError:
				return false, fmt.Errorf("committed offset of %s/%d: %w", tp.topic, tp.partition, blk.Err)
			}
			if end > blk.Offset { // -1: none committed
				past = append(past, tp)
			}
		}
		if len(past) == 0 {
			continue
		}
		// Only those need their oldest offset: records below it are gone.
		oldest, err := listOffsets(version, b, past, sarama.OffsetOldest)
		if err != nil {
			return false, fmt.Errorf("oldest offsets: %w", err)
		}
		for _, tp := range past {
			if start, ok := oldest[tp]; !ok || newest[tp] > start {
				return true, nil
			}
		}
	}
	return false, nil
}
