package producer

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/kafkaworker/kafkaworker/kafkatest"
)

var topicSeq atomic.Int64

// bundle is an embedded broker with one topic, and where a producer's
// logs and metrics go.
type bundle struct {
	cluster *kafkatest.Cluster
	topic   string
	logs    *testutil.Logs
	reg     *prometheus.Registry
}

func setup(t *testing.T, partitions int32) *bundle {
	t.Helper()
	c, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	topic := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), topicSeq.Add(1))
	if err := c.CreateTopic(testCtx(t), topic, partitions); err != nil {
		t.Fatal(err)
	}
	return &bundle{cluster: c, topic: topic, logs: &testutil.Logs{}, reg: prometheus.NewRegistry()}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (b *bundle) config() Config {
	c := DefaultConfig()
	c.Brokers = b.cluster.Addrs()
	c.ConnectTimeout = 10 * time.Second
	return c
}

// producer returns a producer on b's broker, closed when the test ends
// (if the test has not closed it), and checks then that sarama has shut
// down, so goleak sees nothing of it.
func (b *bundle) producer(t *testing.T, opts ...Option) *Producer {
	t.Helper()
	p, err := New(b.config(), append([]Option{WithLogger(b.logs.Logger()), WithRegisterer(b.reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Close(ctx)
		testutil.WaitFor(t, 20*time.Second, "sarama's producer to shut down", func() bool {
			select {
			case <-p.drained:
				return true
			default:
				return false
			}
		})
	})
	return p
}

// produceAnswers makes the broker answer every produce request with code
// (0: pass on to the broker), or, with silent, not at all, while on is true.
func (b *bundle) produceAnswers(on *atomic.Bool, silent bool, code int16) {
	fake := b.cluster.Fake()
	fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if !on.Load() {
			return nil, nil, false
		}
		if silent {
			return nil, nil, true // handled, with no response: the connection stays silent
		}
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range pr.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

var _ = kerr.TopicAuthorizationFailed

// metric is the value of the series of name with labels in reg, 0 when
// there is none; a histogram's is its sample count.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}
