// Package kafkatest runs an in-process Kafka-protocol broker for tests, in
// the spirit of net/http/httptest.
//
// A Cluster is a real protocol peer (github.com/twmb/franz-go/pkg/kfake)
// listening on loopback: sarama, franz-go or any other client talks to it over
// TCP exactly as to a real broker. Alongside the broker it keeps an
// independent client (franz-go's kgo and kadm) to create topics, produce
// keyed records and read committed group offsets and end offsets, so a test
// checks a worker through a client that shares none of the worker's code.
//
//	c, err := kafkatest.NewCluster()
//	if err != nil { ... }
//	defer c.Close()
//	_ = c.CreateTopic(ctx, "orders", 4)
//	_ = c.Produce(ctx, kafkatest.Record{Topic: "orders", Key: []byte("k1"), Value: []byte("v")})
//	// run the worker against c.Addrs() ...
//	committed, _ := c.CommittedOffsets(ctx, "my-group", "orders")
package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster is an in-process Kafka cluster on loopback with a client for
// setting it up and inspecting it. Its methods are safe for concurrent use.
type Cluster struct {
	addrs  []string
	fake   *kfake.Cluster // nil when connected to an external cluster
	client *kgo.Client
	admin  *kadm.Client
	// batchMax is the largest record batch the client writes to a topic
	// (int32), by topic: its max.message.bytes when CreateTopicWithConfig
	// set it, so records larger than the default 1 MiB can be produced
	// there, and batches never exceed what the topic accepts.
	batchMax sync.Map
	// clientOpts are the TLS and SASL options of every client this Cluster
	// opens (WithTLS, WithSASL).
	clientOpts []kgo.Opt
	pki        *certs // nil without WithTLS
	pkiMu      sync.Mutex
	aclsOn     bool // started WithACLs

	closeOnce sync.Once
}

// defaultBatchMax is the largest record batch the client writes to a topic
// whose max.message.bytes it does not know: 1 MiB, below Kafka's default
// max.message.bytes (1048588).
const defaultBatchMax = 1 << 20

// Option configures NewCluster.
type Option func(*options)

type options struct {
	brokers           int
	minSessionTimeout time.Duration
	kfakeOpts         []kfake.Opt
	sasl              []saslUser
	tls, mutualTLS    bool
	acls              bool      // WithACLs
	users             []aclUser // WithUser
}

// WithBrokers sets how many brokers the cluster runs (default 1). More than
// one spreads partition leadership, so clients open several connections.
func WithBrokers(n int) Option { return func(o *options) { o.brokers = n } }

// WithMinSessionTimeout lowers the smallest group session timeout the broker
// accepts (default 1s, below Kafka's 6s) so tests of member failure do not
// wait long for the broker to expire a killed member.
func WithMinSessionTimeout(d time.Duration) Option {
	return func(o *options) { o.minSessionTimeout = d }
}

// WithKfakeOptions passes options straight to kfake.NewCluster, for what this
// package does not wrap.
func WithKfakeOptions(opts ...kfake.Opt) Option {
	return func(o *options) { o.kfakeOpts = append(o.kfakeOpts, opts...) }
}

// NewCluster starts a cluster on loopback ports chosen by the kernel. Close
// it when done.
func NewCluster(opts ...Option) (*Cluster, error) {
	o := options{brokers: 1, minSessionTimeout: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.brokers < 1 {
		return nil, fmt.Errorf("kafkatest: WithBrokers(%d): a cluster needs at least one broker", o.brokers)
	}
	secK, secC, pki, err := o.security()
	if err != nil {
		return nil, err
	}
	aclK, err := o.aclOptions()
	if err != nil {
		return nil, err
	}
	kopts := append([]kfake.Opt{
		kfake.NumBrokers(o.brokers),
		kfake.GroupMinSessionTimeout(o.minSessionTimeout),
	}, append(secK, aclK...)...)
	kopts = append(kopts, o.kfakeOpts...)
	fake, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: start broker: %w", err)
	}
	c, err := connect(fake.ListenAddrs(), secC...)
	if err != nil {
		fake.Close()
		return nil, err
	}
	c.fake, c.pki, c.aclsOn = fake, pki, o.acls
	return c, nil
}

// Connect returns a Cluster that drives an existing Kafka cluster instead of
// an embedded one, so the same test code runs against a real cluster (see
// FromEnv). Fake returns nil on it, and Close leaves the cluster running.
func Connect(addrs []string) (*Cluster, error) {
	if len(addrs) == 0 {
		return nil, errors.New("kafkatest: Connect: no broker addresses")
	}
	return connect(addrs)
}

// FromEnv connects to the cluster named by KAFKA_BROKERS when that is set,
// and otherwise starts an embedded one with opts.
func FromEnv(opts ...Option) (*Cluster, error) {
	if v := strings.TrimSpace(os.Getenv("KAFKA_BROKERS")); v != "" {
		return Connect(strings.Split(v, ","))
	}
	return NewCluster(opts...)
}

func connect(addrs []string, security ...kgo.Opt) (*Cluster, error) {
	c := &Cluster{addrs: addrs, clientOpts: security}
	client, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(addrs...),
		// Topics appear and grow during tests: never serve stale metadata long.
		kgo.MetadataMinAge(10 * time.Millisecond),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchMaxBytesFn(func(topic string) int32 {
			if v, ok := c.batchMax.Load(topic); ok {
				return v.(int32)
			}
			return defaultBatchMax
		}),
		kgo.MaxBufferedRecords(100_000),
		kgo.RecordPartitioner(partitioner()),
	}, security...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: client: %w", err)
	}
	c.client, c.admin = client, kadm.NewClient(client)
	return c, nil
}

// Addrs returns the brokers' host:port addresses, for KAFKA_BROKERS.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// Fake returns the underlying kfake cluster for fault injection
// (ControlKey, SleepControl, MoveTopicPartition, ...), or nil when the
// Cluster drives an external cluster: tests that need fault injection skip
// then, saying so.
func (c *Cluster) Fake() *kfake.Cluster { return c.fake }

// Close stops the client and the broker. It is safe to call more than once.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		if c.fake != nil {
			c.fake.Close()
		}
		c.removeFiles()
	})
}

// CreateTopic creates topic with the given number of partitions.
func (c *Cluster) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	return c.CreateTopicWithConfig(ctx, topic, partitions, nil)
}

// CreateTopicWithConfig creates topic with the given number of partitions
// and topic configs, e.g. {"max.message.bytes": "2097152"}. When
// max.message.bytes is set, records up to that size (less the record batch
// overhead) can be produced to the topic with Produce; elsewhere the limit
// is 1 MiB.
func (c *Cluster) CreateTopicWithConfig(ctx context.Context, topic string, partitions int32, configs map[string]string) error {
	kc := make(map[string]*string, len(configs))
	for k, v := range configs {
		kc[k] = &v
	}
	if v, ok := configs["max.message.bytes"]; ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 512 {
			return fmt.Errorf("kafkatest: create topic %q: max.message.bytes=%q: want a number of bytes, at least 512", topic, v)
		}
		c.batchMax.Store(topic, int32(n))
	}
	resp, err := c.admin.CreateTopic(ctx, partitions, 1, kc, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		c.batchMax.Delete(topic)
		if len(configs) == 0 {
			return fmt.Errorf("kafkatest: create topic %q: %w", topic, err)
		}
		return fmt.Errorf("kafkatest: create topic %q with %v: %w", topic, configs, err)
	}
	return nil
}

// TopicConfig returns the value in force of topic's config key (set on the
// topic, or inherited from the broker), as DescribeConfigs reports it.
func (c *Cluster) TopicConfig(ctx context.Context, topic, key string) (string, error) {
	rcs, err := c.admin.DescribeTopicConfigs(ctx, topic)
	var rc kadm.ResourceConfig
	if err == nil {
		rc, err = rcs.On(topic, nil)
	}
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return "", fmt.Errorf("kafkatest: describe the config of topic %q: %w", topic, err)
	}
	for _, cfg := range rc.Configs {
		if cfg.Key == key && cfg.Value != nil {
			return *cfg.Value, nil
		}
	}
	return "", fmt.Errorf("kafkatest: topic %q has no config %q", topic, key)
}

// SetTopicConfig sets topic's config key to value (an incremental alter:
// the topic's other configs stay).
func (c *Cluster) SetTopicConfig(ctx context.Context, topic, key, value string) error {
	resps, err := c.admin.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: key, Value: &value}}, topic)
	var r kadm.AlterConfigsResponse
	if err == nil {
		r, err = resps.On(topic, nil)
	}
	if err == nil {
		err = r.Err
	}
	if err != nil {
		return fmt.Errorf("kafkatest: set %s=%s on topic %q: %w", key, value, topic, err)
	}
	return nil
}

// DeleteTopic deletes topic.
func (c *Cluster) DeleteTopic(ctx context.Context, topic string) error {
	resp, err := c.admin.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("kafkatest: delete topic %q: %w", topic, err)
	}
	return nil
}

// GroupState returns group's state as its coordinator reports it (Empty,
// PreparingRebalance, CompletingRebalance, Stable or Dead) and how many
// members it has, so a test can wait for a rebalance to have completed.
func (c *Cluster) GroupState(ctx context.Context, group string) (state string, members int, err error) {
	groups, err := c.admin.DescribeGroups(ctx, group)
	if err == nil {
		d := groups[group]
		if err = d.Err; err == nil {
			return d.State, len(d.Members), nil
		}
	}
	return "", 0, fmt.Errorf("kafkatest: describe group %q: %w", group, err)
}

// SetPartitions grows topic to total partitions (Kafka cannot shrink a topic).
func (c *Cluster) SetPartitions(ctx context.Context, topic string, total int) error {
	resp, err := c.admin.UpdatePartitions(ctx, total, topic)
	if err == nil {
		var r kadm.CreatePartitionsResponse
		r, err = resp.On(topic, nil)
		if err == nil {
			err = r.Err
		}
	}
	if err != nil {
		return fmt.Errorf("kafkatest: set partitions of %q to %d: %w", topic, total, err)
	}
	return c.awaitPartitions(ctx, topic, total)
}

// awaitPartitions refreshes the producer's metadata until it sees total
// partitions of topic, so records can be produced to the new ones at once.
// A topic the producer has not written to yet needs nothing: its metadata
// is loaded fresh on first use.
func (c *Cluster) awaitPartitions(ctx context.Context, topic string, total int) error {
	if l, _, _ := c.client.PartitionLeader(topic, 0); l < 0 {
		return nil
	}
	for {
		c.client.ForceMetadataRefresh()
		if l, _, _ := c.client.PartitionLeader(topic, int32(total-1)); l >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkatest: waiting for %d partitions of %q in metadata: %w", total, topic, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Record is a message to produce. Unless Explicit is set the key chooses the
// partition: records with the same key go to the same partition, hashed with
// FNV-1a as sarama's default producer does; nil keys are spread round-robin.
type Record struct {
	Topic     string
	Partition int32 // used only when Explicit is true
	Explicit  bool  // produce to Partition instead of hashing the key
	Key       []byte
	Value     []byte
	Headers   map[string]string
}

// ProducedRecord is where a record landed.
type ProducedRecord struct {
	Record
	Partition int32
	Offset    int64
}

// Produce writes records and waits until every one is acknowledged. Records
// with the same key keep their relative order. It returns where each landed,
// in the order given.
func (c *Cluster) Produce(ctx context.Context, records ...Record) ([]ProducedRecord, error) {
	out := make([]ProducedRecord, len(records))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, r := range records {
		kr := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value}
		if r.Explicit {
			kr.Partition = r.Partition
			kr.Context = context.WithValue(ctx, explicitKey{}, true)
		} else {
			kr.Partition = -1
		}
		for k, v := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		wg.Add(1)
		c.client.Produce(ctx, kr, func(kr *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("record %d to %q: %w", i, kr.Topic, err))
				mu.Unlock()
				return
			}
			out[i] = ProducedRecord{Record: r, Partition: kr.Partition, Offset: kr.Offset}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("kafkatest: produce: %w", errors.Join(errs...))
	}
	return out, nil
}

type explicitKey struct{}

// partitioner sends a record to its explicit partition when Record.Explicit
// was set, hashes a non-nil key with FNV-1a as sarama's default producer does
// (so a sarama producer and this helper agree on where a key lives), and
// spreads nil-key records round-robin.
func partitioner() kgo.Partitioner {
	hash := kgo.SaramaHasher(func(b []byte) uint32 {
		h := fnv.New32a()
		_, _ = h.Write(b)
		return h.Sum32()
	})
	var rr atomic.Uint64
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, n int) int {
			switch {
			case r.Partition >= 0 && r.Context != nil && r.Context.Value(explicitKey{}) != nil:
				return int(r.Partition)
			case r.Key != nil:
				return hash(r.Key, n)
			default:
				return int(rr.Add(1) % uint64(n))
			}
		}
	})
}

// ProduceN writes n records to topic, record i built by gen(i), without
// keeping per-record results: a fast path for filling a topic in benchmarks
// and demos. It returns once all are acknowledged.
func (c *Cluster) ProduceN(ctx context.Context, topic string, n int, gen func(i int) (key, value []byte)) error {
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	wg.Add(n)
	for i := range n {
		k, v := gen(i)
		c.client.Produce(ctx, &kgo.Record{Topic: topic, Partition: -1, Key: k, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	if first != nil {
		return fmt.Errorf("kafkatest: produce %d records to %q: %w", n, topic, first)
	}
	return nil
}

// CommittedOffsets returns the offsets group has committed on topic, by
// partition. Partitions with no commit are absent.
func (c *Cluster) CommittedOffsets(ctx context.Context, group, topic string) (map[int32]int64, error) {
	resp, err := c.admin.FetchOffsets(ctx, group)
	if err == nil {
		err = resp.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil // a group that never committed has no offsets
	}
	if err != nil {
		return nil, fmt.Errorf("kafkatest: committed offsets of group %q: %w", group, err)
	}
	out := make(map[int32]int64)
	for p, o := range resp[topic] {
		if o.Err != nil {
			return nil, fmt.Errorf("kafkatest: committed offset of group %q on %s/%d: %w", group, topic, p, o.Err)
		}
		if o.At >= 0 {
			out[p] = o.At
		}
	}
	return out, nil
}

// EndOffsets returns topic's high watermarks by partition: the offset the
// next produced record would get.
func (c *Cluster) EndOffsets(ctx context.Context, topic string) (map[int32]int64, error) {
	resp, err := c.admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafkatest: end offsets of %q: %w", topic, err)
	}
	out := make(map[int32]int64)
	for p, o := range resp[topic] {
		if o.Err != nil {
			return nil, fmt.Errorf("kafkatest: end offset of %s/%d: %w", topic, p, o.Err)
		}
		out[p] = o.Offset
	}
	return out, nil
}

// ReadRecord is a record read back from a topic.
type ReadRecord struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string // the last value of each header key
	Timestamp time.Time
}
