// Package integration runs the worker against a real Kafka-protocol broker:
// the embedded one from kafkatest by default, or the cluster named by
// KAFKA_BROKERS. Tests that need the embedded broker's fault injection skip,
// saying why, against a real cluster.
package integration

import (
	"log"
	"os"
	"testing"

	"github.com/IBM/sarama"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("KW_SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
	if os.Getenv("KW_CRASH_CHILD") != "" {
		os.Exit(crashChildMain())
	}
	if os.Getenv("KW_EOS_CHILD") != "" {
		os.Exit(eosChildMain())
	}
	goleak.VerifyTestMain(m,
		// go-metrics, which sarama uses, starts one process-wide ticker.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}
