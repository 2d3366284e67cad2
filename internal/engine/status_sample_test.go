package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/forward"
	"github.com/kafkaworker/kafkaworker/internal/telemetry"
	"github.com/kafkaworker/kafkaworker/retry"
)

// A failure names its message and where it went, with the error text cut
// to 200 characters (runes, not bytes).
func TestFailureOf(t *testing.T) {
	t.Parallel()
	p := &partition{topic: "orders.g.retry.1", id: 3, hop: forward.Hop{Source: "orders", Tier: 1}}
	tk := &task{base: 3, attempt: 2}
	tk.msg.Offset = 42
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	long := errors.New(strings.Repeat("é", 250))
	f := failureOf(p, tk, long, &forward.Destination{Topic: "orders.g.retry.2"}, at)
	want := telemetry.Failure{Time: at, Topic: "orders.g.retry.1", Partition: 3, Offset: 42, Attempt: 5, ErrorType: "error",
		Error: strings.Repeat("é", 200) + "…", Destination: telemetry.DestinationRetryTier, Tier: 2, DestinationTopic: "orders.g.retry.2"}
	if f != want {
		t.Fatalf("got %+v\nwant %+v", f, want)
	}
	f = failureOf(p, tk, retry.Permanent(fmt.Errorf("bad: %w", errors.New("x"))), &forward.Destination{Topic: "orders.g.dlq", DeadLetter: true}, at)
	if f.Destination != telemetry.DestinationDeadLetter || f.DestinationTopic != "orders.g.dlq" || f.Tier != 0 || f.Error != "permanent: bad: x" {
		t.Fatalf("dead letter: %+v", f)
	}
	if f = failureOf(p, tk, long, nil, at); f.Destination != telemetry.DestinationInPlace || f.DestinationTopic != "" {
		t.Fatalf("in place: %+v", f)
	}
}
