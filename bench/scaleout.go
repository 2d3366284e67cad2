package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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

// scaleRun is what one scaleout run measured.
type scaleRun struct {
	procs int
	n     int // messages produced
	// The window: from the first message handled (by any process) to the
	// last; msgs is the messages first handled in it, n−1.
	window  time.Duration
	msgs    int
	perProc []int         // the messages each process handled first
	spread  time.Duration // between the first and the last process to handle its last message
	join    time.Duration // processes started → group stable, every process assigned partitions
	// From the start of producing until every message was handled: the
	// processes' CPU time (/proc/<pid>/stat), this process's (the broker's),
	// and the whole machine's busy cores (/proc/stat, other tenants
	// included).
	wall     time.Duration
	childCPU time.Duration
	parent   time.Duration
	busy     float64
	sleep    time.Duration // the handler's measured sleep, mean
	// Correctness over all the logs: distinct messages handled, handlings
	// in all, and messages handled more than once.
	distinct, deliveries, dupes int
	committed                   bool          // the group's commits reached the end offsets
	commitLag                   time.Duration // all handled → commits at the end offsets

	// SIGKILL runs only.
	killed           bool
	killAt           time.Duration // after producing started
	handledAtKill    int           // log records of all processes at the kill
	killedLogged     int           // distinct messages the killed process finished
	committedAtKill  int64         // the group's committed offsets summed, read just before the kill
	bound            int           // killed process's finished messages at or above the committed offset (pre-kill read)
	boundAfter       int           // the same with the offsets read just after the kill
	dupesWithKilled  int           // messages both the killed process and a survivor handled
	regrouped        time.Duration // kill → group stable with the survivors holding every partition (polled every 50 ms)
	failover         time.Duration // kill → a survivor handled a message of every partition the killed process was handling
	failoverFirst    time.Duration // kill → a survivor handled a message of one of them
	killToCommitted  time.Duration // kill → the group's committed offsets reached the end offsets
	killedPartitions int
}

func (r scaleRun) rate() float64 { return div(float64(r.msgs), r.window.Seconds()) }

// scaleoutRun starts procs worker processes at once in a fresh group on a
// fresh, empty topic, waits until the group is stable with every process
// assigned partitions, produces n keyed messages, waits until every one was
// handled and the group's commits reached the end offsets, stops the
// processes and reads their logs. With kill, it SIGKILLs the first process
// once killFrac of n are handled.
func (b *bench) scaleoutRun(ctx context.Context, admin *kadm.Client, partitions int32, n, keys, procs, concurrency int, latency time.Duration, kill bool, killFrac float64) (scaleRun, error) {
	dir, err := os.MkdirTemp("", "kafkaworker-bench-scaleout-")
	if err != nil {
		return scaleRun{}, err
	}
	defer os.RemoveAll(dir)
	topic, group := b.name(fmt.Sprintf("scaleout-p%d", partitions)), b.name(fmt.Sprintf("scaleout-%d", procs))
	if err := b.cluster.CreateTopic(ctx, topic, partitions); err != nil {
		return scaleRun{}, err
	}
	defer func() {
		if err := b.cluster.DeleteTopic(ctx, topic); err != nil {
			progress("scaleout: delete %s: %v", topic, err)
		}
	}()
	runtime.GC()
	r := scaleRun{procs: procs, n: n, killed: kill}
	started := time.Now()
	children := make([]*scaleChild, procs)
	defer func() {
		for _, c := range children {
			if c != nil {
				if done, _ := c.exited(); !done {
					c.kill()
				}
			}
		}
	}()
	for i := range children {
		c, err := b.startScaleChild(ctx, group, topic, filepath.Join(dir, fmt.Sprintf("child%d.log", i)), concurrency, latency)
		if err != nil {
			return scaleRun{}, err
		}
		children[i] = c
	}
	alive := func(c *scaleChild) error {
		if done, err := c.exited(); done {
			return fmt.Errorf("a scaleout child exited early: %v", err)
		}
		return nil
	}
	allAlive := func() error {
		for _, c := range children {
			if err := alive(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := waitAssigned(ctx, admin, group, topic, procs, int(partitions), allAlive); err != nil {
		return scaleRun{}, err
	}
	r.join = time.Since(started)

	cpu0 := make([]time.Duration, procs)
	for i, c := range children {
		cpu0[i] = procCPU(c.cmd.Process.Pid)
	}
	busy0, total0 := machineCPU()
	parent0 := cpuTime()
	produced := time.Now()
	if err := b.produceKeyed(ctx, topic, n, keys); err != nil {
		return scaleRun{}, err
	}
	total := func() int {
		s := 0
		for _, c := range children {
			s += c.lines()
		}
		return s
	}
	deadline := time.Now().Add(2 * time.Minute)
	var killTime time.Time
	var preKill, postKill map[int32]int64
	if kill {
		// Wait for killFrac of the messages to be handled and a commit to
		// have landed, then for a random part of a commit interval, so the
		// kill lands anywhere in the commit cycle.
		victim := children[0]
		for {
			if err := allAlive(); err != nil {
				return scaleRun{}, err
			}
			if time.Now().After(deadline) {
				return scaleRun{}, fmt.Errorf("scaleout: %d of %d handled after 2 minutes, before the kill", total(), n)
			}
			if float64(total()) >= killFrac*float64(n) {
				com, err := b.cluster.CommittedOffsets(ctx, group, topic)
				if err != nil {
					return scaleRun{}, err
				}
				if sumOffsets(com) > 0 {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(rand.N(scaleoutConfig(concurrency).CommitInterval))
		if err := allAlive(); err != nil {
			return scaleRun{}, err
		}
		victimCPU := procCPU(victim.cmd.Process.Pid)
		if preKill, err = b.cluster.CommittedOffsets(ctx, group, topic); err != nil {
			return scaleRun{}, err
		}
		killTime = time.Now()
		victim.kill()
		r.killAt = killTime.Sub(produced)
		r.childCPU += victimCPU - cpu0[0]
		if postKill, err = b.cluster.CommittedOffsets(ctx, group, topic); err != nil {
			return scaleRun{}, err
		}
		r.handledAtKill = total()
		progress("scaleout: SIGKILLed process 1 of %d at +%s, %s of %s logged", procs, dur(r.killAt), count(r.handledAtKill), count(n))
	}

	// Wait until the logs hold every message: first by size (cheap), then
	// by reading them (they may hold duplicates).
	var logs [][]scaleEntry
	var polled time.Time
	for {
		if kill && r.regrouped == 0 && time.Since(polled) >= 50*time.Millisecond {
			polled = time.Now()
			if assignedToAll(ctx, admin, group, topic, procs-1, int(partitions)) {
				r.regrouped = time.Since(killTime)
			}
		}
		for i, c := range children {
			if kill && i == 0 {
				continue
			}
			if err := alive(c); err != nil {
				return scaleRun{}, err
			}
		}
		if time.Now().After(deadline) {
			return scaleRun{}, fmt.Errorf("scaleout: %d of %d handled after 2 minutes", total(), n)
		}
		if total() < n {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		logs = logs[:0]
		seen := map[scalePos]bool{}
		for _, c := range children {
			es, err := readScaleLog(c.log)
			if err != nil {
				return scaleRun{}, err
			}
			logs = append(logs, es)
			for _, e := range es {
				seen[scalePos{e.part, e.off}] = true
			}
		}
		if len(seen) >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.wall = time.Since(produced)
	r.parent = cpuTime() - parent0
	busy1, total1 := machineCPU()
	r.busy = div(float64(busy1-busy0), float64(total1-total0)) * float64(runtime.NumCPU())
	for i, c := range children {
		if !(kill && i == 0) {
			r.childCPU += procCPU(c.cmd.Process.Pid) - cpu0[i]
		}
	}
	allHandled := time.Now()
	r.committed = b.waitCommitted(ctx, group, topic, time.Minute)
	r.commitLag = time.Since(allHandled)
	if kill {
		r.killToCommitted = time.Since(killTime)
	}
	var slept, calls int64
	for i, c := range children {
		if kill && i == 0 {
			continue
		}
		f, err := c.stop()
		if err != nil {
			return scaleRun{}, err
		}
		slept += f["slept"]
		calls += f["calls"]
	}
	r.sleep = time.Duration(div(float64(slept), float64(calls)))
	r.analyse(logs)
	if kill {
		r.analyseKill(logs, killTime, preKill, postKill)
	}
	return r, nil
}

// waitAssigned polls until group is stable with procs members, each
// assigned some of topic's partitions and all of them assigned, and has
// stayed so for a second (a cooperative rebalance takes two rounds; a
// second is two heartbeats), for at most a minute. check is called on
// each poll (the processes are alive).
func waitAssigned(ctx context.Context, admin *kadm.Client, group, topic string, procs, partitions int, check func() error) error {
	deadline := time.Now().Add(time.Minute)
	var since time.Time
	var last, state string
	for {
		if err := check(); err != nil {
			return err
		}
		fp, st, ok := groupAssignment(ctx, admin, group, topic, procs, partitions)
		if st != "" {
			state = st
		}
		switch {
		case !ok:
			since, last = time.Time{}, ""
		case fp != last:
			since, last = time.Now(), fp
		case time.Since(since) >= time.Second:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scaleout: group %s not stable with %d members sharing %d partitions after a minute (last: %s)", group, procs, partitions, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// groupAssignment describes group: ok when it is stable with procs
// members, each assigned some of topic's partitions and all of them
// assigned; fp is the assignment, state the group's state.
func groupAssignment(ctx context.Context, admin *kadm.Client, group, topic string, procs, partitions int) (fp, state string, ok bool) {
	gs, err := admin.DescribeGroups(ctx, group)
	if err != nil {
		return "", "", false
	}
	d := gs[group]
	state = fmt.Sprintf("%s with %d members", d.State, len(d.Members))
	if d.Err != nil || d.State != "Stable" || len(d.Members) != procs {
		return "", state, false
	}
	ok = true
	assigned := 0
	var parts []string
	for _, m := range d.Members {
		mine := 0
		if c, isConsumer := m.Assigned.AsConsumer(); isConsumer {
			for _, t := range c.Topics {
				if t.Topic == topic {
					mine += len(t.Partitions)
					parts = append(parts, fmt.Sprint(m.MemberID, t.Partitions))
				}
			}
		}
		ok = ok && mine > 0
		assigned += mine
	}
	slices.Sort(parts)
	return strings.Join(parts, ";"), state, ok && assigned == partitions
}

// assignedToAll reports whether group is stable with procs members sharing
// all of topic's partitions.
func assignedToAll(ctx context.Context, admin *kadm.Client, group, topic string, procs, partitions int) bool {
	_, _, ok := groupAssignment(ctx, admin, group, topic, procs, partitions)
	return ok
}

// produceKeyed produces n messages of 100 bytes to topic, keyed at random
// (fixed seed) among keys keys, as keyedTopic does.
func (b *bench) produceKeyed(ctx context.Context, topic string, n, keys int) error {
	keyBytes := make([][]byte, keys)
	for i := range keyBytes {
		keyBytes[i] = fmt.Appendf(nil, "key-%06d", i)
	}
	rng := rand.New(rand.NewPCG(uint64(n), uint64(keys)))
	noise := make([]byte, 1<<20)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	return b.cluster.ProduceN(ctx, topic, n, func(int) ([]byte, []byte) {
		off := rng.IntN(len(noise) - 100)
		return keyBytes[rng.IntN(keys)], noise[off : off+100 : off+100]
	})
}

// procCPU returns the CPU time (user + system) process pid has used, from
// /proc/<pid>/stat (in clock ticks, 100 a second); 0 if it cannot be read.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (in parentheses, which may hold
	// spaces): state is the first, utime the 12th, stime the 13th.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// analyse computes the window, the shares and the duplicates from the logs.
func (r *scaleRun) analyse(logs [][]scaleEntry) {
	// The first handling of each message, by whom.
	type first struct {
		at   int64
		proc int
	}
	firsts := map[scalePos]first{}
	times := map[scalePos]int{}
	for i, es := range logs {
		for _, e := range es {
			p := scalePos{e.part, e.off}
			times[p]++
			if f, ok := firsts[p]; !ok || e.at < f.at {
				firsts[p] = first{e.at, i}
			}
		}
		r.deliveries += len(es)
	}
	r.distinct = len(firsts)
	for _, k := range times {
		if k > 1 {
			r.dupes++
		}
	}
	from, last := int64(math.MaxInt64), int64(0)
	r.perProc = make([]int, len(logs))
	for _, f := range firsts {
		from, last = min(from, f.at), max(last, f.at)
		r.perProc[f.proc]++
	}
	r.msgs = max(r.distinct-1, 0)
	r.window = time.Duration(last - from)
	ends := make([]int64, len(logs))
	for _, f := range firsts {
		ends[f.proc] = max(ends[f.proc], f.at)
	}
	r.spread = time.Duration(slices.Max(ends) - slices.Min(ends))
}

// analyseKill computes the SIGKILL figures: what the killed process had
// finished above the committed offsets (the bound on duplicates), how many
// of those a survivor handled again, and how long its partitions waited.
func (r *scaleRun) analyseKill(logs [][]scaleEntry, killTime time.Time, preKill, postKill map[int32]int64) {
	killed := logs[0]
	mine := map[scalePos]bool{}
	for _, e := range killed {
		mine[scalePos{e.part, e.off}] = true
	}
	r.killedLogged = len(mine)
	r.committedAtKill = sumOffsets(preKill)
	for p := range mine {
		if p.off >= preKill[p.part] {
			r.bound++
		}
		if p.off >= postKill[p.part] {
			r.boundAfter++
		}
	}
	again := map[scalePos]bool{}
	for _, es := range logs[1:] {
		for _, e := range es {
			if p := (scalePos{e.part, e.off}); mine[p] {
				again[p] = true
			}
		}
	}
	r.dupesWithKilled = len(again)
	// The partitions the killed process held: those it handled a message
	// of (the group was stable before the messages were produced, and no
	// rebalance came before the kill). Failover is the wait from the kill
	// to a survivor's first message of one, the first and the last.
	k := killTime.UnixNano()
	held := map[int32]bool{}
	for _, e := range killed {
		held[e.part] = true
	}
	r.killedPartitions = len(held)
	resumed := map[int32]int64{}
	for _, es := range logs[1:] {
		for _, e := range es {
			if held[e.part] && e.at > k {
				if t, ok := resumed[e.part]; !ok || e.at < t {
					resumed[e.part] = e.at
				}
			}
		}
	}
	for p := range held {
		t, ok := resumed[p]
		if !ok {
			// Nothing left to handle there after the kill, or a survivor
			// never got it: either way not a failover figure.
			continue
		}
		r.failover = max(r.failover, time.Duration(t-k))
		if r.failoverFirst == 0 || time.Duration(t-k) < r.failoverFirst {
			r.failoverFirst = time.Duration(t - k)
		}
	}
}

func sumOffsets(m map[int32]int64) int64 {
	var s int64
	for _, o := range m {
		s += o
	}
	return s
}

// machineCPU returns the whole machine's busy and total jiffies from
// /proc/stat (0, 0 if it cannot be read).
func machineCPU() (busy, total int64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// scaleout measures how the worker scales out: N worker processes (each a
// child, see scaleoutChildMain) in one group on a 12-partition topic with
// a handler that sleeps 5 ms, for N = 1, 2, 3; then 3 processes with one
// SIGKILLed mid-run, checked from the processes' logs of what they
// handled: nothing lost, duplicates within what the killed process had
// finished but not committed.
func (b *bench) scaleout(ctx context.Context) (table, error) {
	const (
		partitions  = 12
		keys        = 1000
		concurrency = 32
		latency     = 5 * time.Millisecond
		killFrac    = 0.3
		// The SIGKILL run's messages: enough that the kill, after the
		// first commit, lands with most of them still to handle.
		killN = 60_000
	)
	n, reps := 30_000, b.repsFor(3)
	if b.quick {
		n = 20_000
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.cluster.Addrs()...))
	if err != nil {
		return table{}, err
	}
	defer cl.Close()
	admin := kadm.NewClient(cl)
	procs := []int{1, 2, 3}
	runs := make([][]scaleRun, len(procs))
	for i := range reps {
		for j, p := range procs {
			r, err := b.scaleoutRun(ctx, admin, partitions, n, keys, p, concurrency, latency, false, 0)
			if err != nil {
				return table{}, fmt.Errorf("%d processes: %w", p, err)
			}
			progress("scaleout run %d/%d N=%d: %s msgs/s (%s msgs over %s, first handled by process %v), joined after %s, all handled %s after producing, "+
				"sleep %s, CPU: workers %s/msg, broker %s/msg, machine %.2f cores busy; lost %d, duplicates %d; committed %v after +%s",
				i+1, reps, p, rate(r.rate()), count(r.msgs), dur(r.window), r.perProc, dur(r.join), dur(r.wall),
				r.sleep.Round(time.Microsecond), micros(r.childCPU/time.Duration(n)), micros(r.parent/time.Duration(n)), r.busy,
				n-r.distinct, r.dupes, r.committed, dur(r.commitLag))
			runs[j] = append(runs[j], r)
		}
	}
	k, err := b.scaleoutRun(ctx, admin, partitions, killN, keys, 3, concurrency, latency, true, killFrac)
	if err != nil {
		return table{}, fmt.Errorf("3 processes, one killed: %w", err)
	}
	progress("scaleout SIGKILL run: lost %d, duplicates %d (%d with the killed process), bound %d (after-kill read %d); "+
		"killed process finished %d, committed at kill %d; regrouped after %s, failover %s over %d partitions; kill → committed to the end %s (%v)",
		k.n-k.distinct, k.dupes, k.dupesWithKilled, k.bound, k.boundAfter, k.killedLogged, k.committedAtKill,
		dur(k.regrouped),
		dur(k.failover), k.killedPartitions, dur(k.killToCommitted), k.committed)

	med := func(rs []scaleRun, f func(scaleRun) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	base := med(runs[0], scaleRun.rate)
	cols := func(f func(rs []scaleRun, p int) string, kf func(scaleRun) string) []string {
		out := make([]string, 0, len(procs)+1)
		for j, p := range procs {
			out = append(out, f(runs[j], p))
		}
		return append(out, kf(k))
	}
	row := func(name string, f func(rs []scaleRun, p int) string, kf func(scaleRun) string) []string {
		return append([]string{name}, cols(f, kf)...)
	}
	one := func(f func(scaleRun) float64, format func(float64) string) (func([]scaleRun, int) string, func(scaleRun) string) {
		return func(rs []scaleRun, _ int) string { return format(med(rs, f)) }, func(r scaleRun) string { return format(f(r)) }
	}
	rateCol, rateK := one(scaleRun.rate, rate)
	durOf := func(f func(scaleRun) time.Duration) func(scaleRun) float64 {
		return func(r scaleRun) float64 { return f(r).Seconds() }
	}
	durFmt := func(v float64) string { return dur(secs(v)) }
	perMsg := func(f func(scaleRun) time.Duration) func(scaleRun) float64 {
		return func(r scaleRun) float64 { return f(r).Seconds() / float64(r.n) }
	}
	microFmt := func(v float64) string { return micros(secs(v)) }
	childCPU, childCPUK := one(perMsg(func(r scaleRun) time.Duration { return r.childCPU }), microFmt)
	brokerCPU, brokerCPUK := one(perMsg(func(r scaleRun) time.Duration { return r.parent }), microFmt)
	cores, coresK := one(func(r scaleRun) float64 { return div(r.childCPU.Seconds(), r.wall.Seconds()) }, func(v float64) string { return fmt.Sprintf("%.2f", v) })
	busy, busyK := one(func(r scaleRun) float64 { return r.busy }, func(v float64) string { return fmt.Sprintf("%.2f of %d", v, runtime.NumCPU()) })
	join, joinK := one(durOf(func(r scaleRun) time.Duration { return r.join }), durFmt)
	spread, _ := one(durOf(func(r scaleRun) time.Duration { return r.spread }), durFmt)
	win, winK := one(durOf(func(r scaleRun) time.Duration { return r.window }), durFmt)
	sleepAll := func() time.Duration {
		var all []scaleRun
		for _, rs := range runs {
			all = append(all, rs...)
		}
		return secs(med(all, func(r scaleRun) float64 { return r.sleep.Seconds() }))
	}()
	ideal := func(p int) float64 { return float64(p*concurrency) / sleepAll.Seconds() }
	verdict := func(rs []scaleRun, p int) string {
		q := div(med(rs, scaleRun.rate), base)
		return fmt.Sprintf("**%s** (linear: %d.00)", ratio(q), p)
	}
	perProc := func(rs []scaleRun, p int) string { return rate(med(rs, scaleRun.rate) / float64(p)) }
	perRun := func(rs []scaleRun, _ int) string {
		s := make([]string, len(rs))
		for i, r := range rs {
			s[i] = rate(r.rate())
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	shares := func(rs []scaleRun, _ int) string { return fmt.Sprint(medianRun(rs).perProc) }
	lost := func(rs []scaleRun, _ int) string {
		var l []string
		for _, r := range rs {
			l = append(l, strconv.Itoa(r.n-r.distinct))
		}
		return lostSummary(l)
	}
	dupes := func(rs []scaleRun, _ int) string {
		var l []string
		for _, r := range rs {
			l = append(l, strconv.Itoa(r.dupes))
		}
		return "[" + strings.Join(l, " ") + "]"
	}
	commits := func(rs []scaleRun, _ int) string {
		var worst time.Duration
		for _, r := range rs {
			if !r.committed {
				return "**no** (see stderr)"
			}
			worst = max(worst, r.commitLag)
		}
		return fmt.Sprintf("yes, ≤ %s after all handled", dur(worst))
	}
	kCommit := func(r scaleRun) string { return commits([]scaleRun{r}, 3) }
	killedOK := k.distinct == k.n && k.dupes <= k.bound
	verdictK := "**yes**"
	if !killedOK {
		verdictK = "**NO**"
		progress("scaleout: WARNING: the SIGKILL run lost messages or exceeded the duplicate bound")
	}
	header := []string{"metric"}
	for _, p := range procs {
		header = append(header, fmt.Sprintf("N = %d", p))
	}
	header = append(header, fmt.Sprintf("N = 3, one SIGKILLed mid-run (%s msgs)", count(killN)))
	sched := "runs go N = 1, 2, 3 in turn"
	if reps > 1 {
		sched = fmt.Sprintf("medians of %d runs per N, %s; the SIGKILL run once", reps, sched)
	} else {
		sched = "one run per N and the SIGKILL run once"
	}
	return table{
		title: fmt.Sprintf("Scale-out: N worker processes in one group, %d partitions, %s msgs × 100 B, %s keys, a %v sleep handler, WORKER_CONCURRENCY=%d each (%s)",
			partitions, count(n), count(keys), latency, concurrency, sched),
		header: header,
		rows: [][]string{
			row("**msgs/s** (first → last message handled, all processes together)", rateCol, rateK),
			row("**scaling**: msgs/s(N) / msgs/s(1)", verdict, func(r scaleRun) string { return ratio(div(r.rate(), base)) + " (the window holds the failover)" }),
			row("msgs/s per process", perProc, func(r scaleRun) string { return "—" }),
			row(fmt.Sprintf("ideal msgs/s: N × %d / measured sleep (%s)", concurrency, sleepAll.Round(time.Microsecond)),
				func(_ []scaleRun, p int) string { return rate(ideal(p)) }, func(scaleRun) string { return rate(ideal(3)) }),
			row("ratio to ideal", func(rs []scaleRun, p int) string { return ratio(div(med(rs, scaleRun.rate), ideal(p))) },
				func(r scaleRun) string { return ratio(div(r.rate(), ideal(3))) }),
			row("per-run msgs/s", perRun, func(r scaleRun) string { return rate(r.rate()) }),
			row("window length", win, winK),
			row("messages handled by each process (first handlings, median run)", shares, func(r scaleRun) string { return fmt.Sprint(r.perProc) }),
			row("first process done → last process done (its last message handled)", spread, func(scaleRun) string { return "—" }),
			row("processes started → group stable, every process assigned, unchanged for 1 s (in no rate)", join, joinK),
			row("workers' CPU per message (all N processes, producing → all handled)", childCPU, childCPUK),
			row("workers' CPU busy (cores, all N processes together)", cores, coresK),
			row("broker (parent process) CPU per message", brokerCPU, brokerCPUK),
			row("machine CPU busy, producing → all handled (all tenants)", busy, busyK),
			row("**lost** (produced − distinct handled)", lost, func(r scaleRun) string { return lostSummary([]string{strconv.Itoa(r.n - r.distinct)}) }),
			row("**duplicates** (messages handled more than once), per run", dupes, func(r scaleRun) string {
				return fmt.Sprintf("**%d** (%d also handled by the killed process; %d handlings in all)", r.dupes, r.dupesWithKilled, r.deliveries)
			}),
			row("**duplicate bound**: the killed process's finished messages at or above the committed offsets read just before the kill", nil2(procs), func(r scaleRun) string {
				return fmt.Sprintf("**%d** (with the offsets read just after the kill: %d); within: %s", r.bound, r.boundAfter, verdictK)
			}),
			row("at the kill (after producing began): all processes' messages handled; the killed one's; the group's committed offsets (sum)", nil2(procs), func(r scaleRun) string {
				return fmt.Sprintf("+%s: %s of %s; %s; %s", dur(r.killAt), count(r.handledAtKill), count(r.n), count(r.killedLogged), count(int(r.committedAtKill)))
			}),
			row(fmt.Sprintf("kill → group stable with the 2 survivors holding all partitions (session timeout %v, then the rebalance)", scaleoutSession), nil2(procs), func(r scaleRun) string {
				if r.regrouped == 0 {
					return "not seen (see stderr)"
				}
				return dur(r.regrouped)
			}),
			row("kill → a survivor handles a message of the killed process's partitions: the first of them; all of them", nil2(procs), func(r scaleRun) string {
				return fmt.Sprintf("%s; %s (%d partitions)", dur(r.failoverFirst), dur(r.failover), r.killedPartitions)
			}),
			row("**kill → survivors' committed offsets reach the end offsets**", nil2(procs), func(r scaleRun) string {
				if !r.committed {
					return "**never** (see stderr)"
				}
				return "**" + dur(r.killToCommitted) + "**"
			}),
			row("committed offsets reached end offsets", commits, kCommit),
		},
		notes: []string{
			fmt.Sprintf("Each process is the bench binary re-executed as a worker (worker.ConfigFromEnv) whose handler sleeps %v and then appends the message's partition, offset and the wall-clock time to a log of its own with one O_APPEND write; "+
				"the broker stays in the parent. Each run has a fresh group and a fresh, empty topic: all N processes start at once, and only once the group is stable with every process assigned partitions "+
				"(kadm DescribeGroups, unchanged for a second) does the parent produce the messages (%d keys, random, fixed seed; producing takes well under a second), so no process starts alone on a backlog and no rebalance falls in the window. "+
				"**Window**: from the first message handled by any process to the last one handled, by the wall clock the processes share (each log record holds the time its handler finished); msgs/s is the n−1 messages after the first over that time. "+
				"Starting the processes and the join are in no rate (their own row).", latency, keys),
			fmt.Sprintf("I/O-bound by construction: %d handler goroutines each sleeping %v sustain at most %d / %v msgs/s per process (Little's law); the CPU rows show what that costs, "+
				"and whether the machine (%d cores, shared with other tenants; its busy figure counts them too) has room for N processes and the broker.", concurrency, latency, concurrency, latency, runtime.NumCPU()),
			fmt.Sprintf("SIGKILL run: 3 processes as above on %s messages; once %.0f%% of them are handled and the group has committed offsets, and a random part of a commit interval later (so the kill lands anywhere in the commit cycle), the parent reads the group's committed offsets and SIGKILLs process 1 (os.Process.Kill: no drain, no final commit, no LeaveGroup); "+
				"the survivors get its partitions once its session (%v) expires and the group rebalances. From the logs: lost = produced − distinct (partition, offset) handled; "+
				"duplicates = messages handled more than once. The bound is what the killed process finished but had not committed: its logged messages at or above the committed offset of their partition. "+
				"Messages it had in flight (at most %d handlers) were not logged, so a survivor's handling of them is a first handling, not a duplicate. The survivors may skip some of the bound: messages recorded as done in the committed metadata (the done-set).",
				count(killN), killFrac*100, scaleoutSession, concurrency),
			"Failover rows: kill → group stable with the survivors is the dead member's session timeout plus the rebalance (polled every 50 ms). " +
				"The survivors' first messages of the taken-over partitions come later: each starts the new claims (committed offset and done-set, first fetch) while its handlers are still busy with the backlog already fetched for its own partitions; this bench does not break that time down further.",
			workerSettingsNote(scaleoutConfig(concurrency)),
			fmt.Sprintf("Settings: %s; every process GOMAXPROCS=%d; the parent waits (via kadm) for the group's committed offsets to reach the end offsets before stopping the processes with SIGTERM; that wait is in no rate.",
				strings.Join(scaleoutEnv(concurrency), " "), runtime.GOMAXPROCS(0)),
		},
	}, nil
}

// scaleoutConfig is the worker.Config a scaleout child gets, for the notes.
func scaleoutConfig(concurrency int) worker.Config {
	cfg := benchWorkerConfig(concurrency, true)
	cfg.SessionTimeout, cfg.HeartbeatInterval = scaleoutSession, scaleoutHeartbeat
	return cfg
}

// nil2 fills the columns of the runs without a kill.
func nil2([]int) func([]scaleRun, int) string {
	return func([]scaleRun, int) string { return "—" }
}

// medianRun returns the run with the median rate.
func medianRun(rs []scaleRun) scaleRun {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b scaleRun) int {
		switch {
		case a.rate() < b.rate():
			return -1
		case a.rate() > b.rate():
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// lostSummary formats per-run lost counts, bold unless all are 0.
func lostSummary(l []string) string {
	for _, v := range l {
		if v != "0" {
			return "**" + strings.Join(l, " ") + "** (see stderr)"
		}
	}
	return "0" + strings.Repeat(" 0", len(l)-1)
}
