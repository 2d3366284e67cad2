package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kafkaworker/kafkaworker/worker"
)

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
