// Package integration runs the worker against a real Kafka-protocol broker:
// the embedded one from kafkatest by default, or the cluster named by
// KAFKA_BROKERS. Tests that need the embedded broker's fault injection skip,
// saying why, against a real cluster.
package integration

import (
	"fmt"
	"log"
	"os"
	"testing"
	"time"

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
	code := m.Run()
	if code == 0 {
		code = verifyNoLeaks(20 * time.Second)
	}
	os.Exit(code)
}

// verifyNoLeaks fails the run if goroutines other than the process-wide
// ones are still running once within is up. A stop does not wait past its
// deadline for a request to a silent broker (README, "A stop that always
// ends"): that request, and sarama's retries of it, end on their own
// timeouts after Run returned, so the check gives them that long.
func verifyNoLeaks(within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		// go-metrics, which sarama uses, starts one process-wide ticker.
		err := goleak.Find(goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
		if err == nil {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			return 1
		}
		time.Sleep(100 * time.Millisecond) // polling for the stragglers to end, not synchronisation
	}
}
