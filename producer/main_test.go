package producer

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks, with goleak, that the tests leave no goroutine behind.
// sarama's circuit breakers, which the tests' broker faults open, sleep
// out 10s on a goroutine of their own that nothing can stop; so the check
// waits up to 15s for every goroutine to end rather than ignore those.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := goleak.Find(
				// go-metrics, which sarama uses, starts one process-wide ticker.
				goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
			)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
				code = 1
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	os.Exit(code)
}
