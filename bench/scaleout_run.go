package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

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
