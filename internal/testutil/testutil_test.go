package testutil

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLogsKeepsEveryRecordWithItsAttributes(t *testing.T) {
	var logs Logs
	log := logs.Logger().With("component", "x")
	log.Debug("quiet", "n", 1)
	log.Warn("loud", "broker", "a:9092", "attempt", 2)
	if got := len(logs.Records()); got != 2 {
		t.Fatalf("%d records, want 2 (every level is kept)", got)
	}
	warns := logs.Find(slog.LevelWarn, "loud")
	if len(warns) != 1 || Attr(warns[0], "broker") != "a:9092" || Attr(warns[0], "attempt") != "2" {
		t.Fatalf("Find(WARN, loud) = %v", warns)
	}
	if Attr(warns[0], "missing") != "" || Attrs(warns[0])["attempt"].Int64() != 2 {
		t.Errorf("Attr of a missing key or Attrs' kinds are wrong: %v", Attrs(warns[0]))
	}
	if len(logs.Find(slog.LevelInfo, "loud")) != 0 {
		t.Error("Find matched a record of another level")
	}
}

func TestBufferIsSafeAcrossGoroutines(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.TextLogger().Info("line")
		}()
	}
	WaitFor(t, 5*time.Second, "four lines", func() bool { return strings.Count(b.String(), "msg=line") == 4 })
	wg.Wait()
}

func TestWaitForFailsAfterItsDeadline(t *testing.T) {
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine, as in a test
		defer close(done)
		WaitFor(ft, 30*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if !strings.Contains(ft.msg, "timed out after 30ms waiting for never") {
		t.Errorf("message = %q", ft.msg)
	}
}

// fakeTB records Fatalf and ends the calling goroutine, as testing does.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
