package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/worker"
)

// The scaleout scenario's child: mode scaleoutChildMode of childModeEnv, a
// worker whose handler sleeps KAFKAWORKER_BENCH_CHILD_SLEEP and then appends
// the message's identity and the time to the file named by childLogEnv.
const (
	scaleoutChildMode = "scaleout"
	childLogEnv       = "KAFKAWORKER_BENCH_CHILD_LOG"
)

// scaleoutLine is the length of one record of a scaleout child's log:
// partition, offset and the wall-clock time (Unix nanoseconds) at which the
// handler finished, fixed-width, so the parent counts records by file size.
const scaleoutLine = 4 + 13 + 20

// scaleoutChildMain is the child process of the scaleout scenario: a worker
// configured from the environment (worker.ConfigFromEnv) whose handler
// sleeps, then appends "partition offset unixnano\n" to the log with one
// O_APPEND write. A SIGKILL loses nothing already written (it is in the page
// cache), so the log is exactly what the process finished, in the order it
// finished it; the wall clock is shared by every process on the machine, so
// the parent can line the children's logs up. It runs until SIGTERM, then
// prints its CPU time and how long its sleeps really took.
func scaleoutChildMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "bench child (%s): %v\n", scaleoutChildMode, err)
		return 1
	}

	sleep, err := time.ParseDuration(os.Getenv(childSleepEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", childSleepEnv, err))
	}
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		return fail(err)
	}
	f, err := os.OpenFile(os.Getenv(childLogEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", childLogEnv, err))
	}
	defer f.Close()
	var slept, calls atomic.Int64
	h := handler.HandlerFunc(func(ctx context.Context, m *handler.Message) error {
		t0 := time.Now()
		time.Sleep(sleep)
		now := time.Now()
		slept.Add(int64(now.Sub(t0)))
		calls.Add(1)
		line := fmt.Appendf(make([]byte, 0, scaleoutLine), "%3d %12d %19d\n", m.Partition, m.Offset, now.UnixNano())
		if _, err := f.Write(line); err != nil {
			fmt.Fprintln(os.Stderr, "bench child (scaleout): write log:", err)
			os.Exit(3)
		}
		return nil
	})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := worker.New(cfg, h, worker.WithLogger(log))
	if err != nil {
		return fail(err)
	}
	if err := w.Run(ctx); err != nil {
		return fail(err)
	}
	fmt.Printf("cpu=%d\nslept=%d\ncalls=%d\n", int64(cpuTime()), slept.Load(), calls.Load())
	return 0
}

// scaleEntry is one record of a scaleout child's log.
type scaleEntry struct {
	part int32
	off  int64
	at   int64 // Unix nanoseconds when the handler finished
}

type scalePos struct {
	part int32
	off  int64
}

// readScaleLog parses a child's log; a trailing partial record (a write
// under way) is left out.
func readScaleLog(path string) ([]scaleEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := make([]scaleEntry, 0, len(data)/scaleoutLine)
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		f := strings.Fields(string(data[:i]))
		data = data[i+1:]
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: bad record %q", path, f)
		}
		p, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		at, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%s: bad record %q", path, f)
		}
		out = append(out, scaleEntry{part: int32(p), off: o, at: at})
	}
	return out, nil
}

// scaleChild is one worker process of a scaleout run.
type scaleChild struct {
	cmd  *exec.Cmd
	log  string
	out  *lineWriter
	done chan struct{} // closed once the process has ended
	err  error         // from Wait, once done is closed
}

// startScaleChild starts one worker process in group on topic, logging to
// logPath.
func (b *bench) startScaleChild(ctx context.Context, group, topic, logPath string, concurrency int, latency time.Duration) (*scaleChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(childEnviron(), scaleoutEnv(concurrency)...)
	cmd.Env = append(cmd.Env,
		childModeEnv+"="+scaleoutChildMode,
		childSleepEnv+"="+latency.String(),
		childLogEnv+"="+logPath,
		"KAFKA_BROKERS="+strings.Join(b.cluster.Addrs(), ","),
		"KAFKA_GROUP_ID="+group,
		"KAFKA_TOPICS="+topic,
	)
	out := &lineWriter{results: make(chan string, 1), marks: map[string]time.Duration{}}
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start child: %w", err)
	}
	c := &scaleChild{cmd: cmd, log: logPath, out: out, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	return c, nil
}

// scaleoutEnv is the worker settings every scaleout child gets besides its
// broker, group and topic.
func scaleoutEnv(concurrency int) []string {
	return []string{
		"WORKER_CONCURRENCY=" + strconv.Itoa(concurrency),
		"RETRY_TOPIC_DELAYS=",
		"KAFKA_SESSION_TIMEOUT=" + scaleoutSession.String(),
		"KAFKA_HEARTBEAT_INTERVAL=" + scaleoutHeartbeat.String(),
	}
}

const (
	scaleoutSession   = 3 * time.Second
	scaleoutHeartbeat = 500 * time.Millisecond
)

// exited reports whether the child has ended, and how.
func (c *scaleChild) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// lines is how many complete records the child's log holds.
func (c *scaleChild) lines() int {
	st, err := os.Stat(c.log)
	if err != nil {
		return 0
	}
	return int(st.Size()) / scaleoutLine
}

// kill sends SIGKILL and waits for the process to end.
func (c *scaleChild) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop ends the child with SIGTERM and returns what it printed on the way
// out (its CPU time, its sleeps).
func (c *scaleChild) stop() (map[string]int64, error) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		if c.err != nil {
			return nil, fmt.Errorf("scaleout child: %v", c.err)
		}
	case <-time.After(time.Minute):
		c.kill()
		return nil, fmt.Errorf("scaleout child ignored SIGTERM for a minute; killed")
	}
	return c.out.trailer(), nil
}
