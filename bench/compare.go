package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"
)

// variant is one consumer a child-process scenario compares.
type variant struct {
	name string   // as in the table
	tag  string   // short, for progress lines and profile file names
	side string   // "raw" or "worker"
	env  []string // more child settings
}

var (
	rawVariant    = variant{name: "raw sarama", tag: "raw", side: "raw"}
	workerVariant = variant{name: "kafkaworker", tag: "worker", side: "worker"}
	// noRetryVariant is the worker without retry topics, so it consumes
	// only the source topic's partitions, as raw sarama does.
	noRetryVariant = variant{name: "kafkaworker, no retry topics", tag: "worker-noretry", side: "worker",
		env: []string{"RETRY_TOPIC_DELAYS="}}
)

// childRun consumes the whole of topic (n messages) with v in a child
// process and returns the measurement: rates from the child's own clock,
// CPU and allocations from the child's process, and its peak RSS.
func (b *bench) childRun(ctx context.Context, scenario string, rep int, v variant, topic string, n, concurrency int) (measurement, error) {
	cs := childSpec{
		side: v.side, group: b.name(v.tag), topic: topic, concurrency: concurrency, env: v.env,
		target: n, timeout: 5 * time.Minute,
	}
	if b.cpuprofile != "" {
		cs.profile = fmt.Sprintf("%s.%s.%s.%d", b.cpuprofile, scenario, v.tag, rep)
	}
	// The broker's garbage from producing and from the last run is
	// collected now, not during this one.
	runtime.GC()
	r, err := b.runChild(ctx, cs)
	if err != nil {
		return measurement{}, err
	}
	m := measurement{
		side: v.name, n: n, snaps: map[string]childSnapshot{}, brokerCPU: r.brokerCPU,
		hwm: r.hwm, committed: r.committed, commitLag: r.commitLag,
	}
	for _, name := range []string{snapStart, snapJoined, snapFirst, snapLast} {
		if s, ok := snapshotFrom(r.result, name); ok {
			m.snaps[name] = s
		}
	}
	if len(m.snaps) < 3 {
		return measurement{}, fmt.Errorf("%s child: incomplete result line %v", v.name, r.result)
	}
	m.total, m.startup = m.snaps[snapLast].at, m.snaps[snapFirst].at
	m.cpu = m.snaps[snapLast].cpu - m.snaps[snapStart].cpu
	return m, nil
}

// alternateChildren runs every variant reps times, in turn (the first
// variant first), each in a child process consuming all of topic with a
// fresh group, and returns the measurements by variant.
func (b *bench) alternateChildren(ctx context.Context, scenario, topic string, n, concurrency, reps int, variants ...variant) ([][]measurement, error) {
	out := make([][]measurement, len(variants))
	for i := range reps {
		for j, v := range variants {
			m, err := b.childRun(ctx, scenario, i+1, v, topic, n, concurrency)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			h := m.window(snapFirst)
			progress("%s run %d/%d %-14s: %s msgs, hot %s msgs/s (from session start %s, whole run %s), first message after %s, CPU %s/msg (broker %s/msg), %.2f allocs/msg, %.0f B/msg, %d GCs, peak RSS %s, committed %v after +%s",
				scenario, i+1, reps, v.tag, count(m.n), rate(h.rate()), rate(m.window(snapJoined).rate()), rate(m.rate()), dur(m.startup),
				micros(secs(h.cpuPerMsg())), micros(secs(h.brokerPerMsg())), h.allocsPerMsg(), h.bytesPerMsg(), h.gcs, mib(m.hwm), m.committed, dur(m.commitLag))
			out[j] = append(out[j], m)
		}
	}
	return out, nil
}

// window is what a child run did from one of its snapshots to the last
// handled message.
type window struct {
	ok      bool    // the child took the snapshot
	msgs    float64 // messages handled in the window
	d       time.Duration
	cpu     time.Duration // the consumer's (the child's) CPU time
	broker  time.Duration // the parent's CPU time: the broker serving the child
	mallocs uint64
	bytes   uint64
	gcs     uint32
}

// window returns the run's window from snapshot from to the last message.
// From the first message (snapFirst) it holds the other n−1 messages; from
// the start or the session start, all n.
func (m measurement) window(from string) window {
	a, ok := m.snaps[from]
	z, okz := m.snaps[snapLast]
	if !ok || !okz {
		return window{}
	}
	msgs := float64(m.n)
	if from == snapFirst {
		msgs = float64(max(m.n-1, 1))
	}
	return window{ok: true, msgs: msgs, d: z.at - a.at, cpu: z.cpu - a.cpu,
		broker:  m.brokerCPU[snapLast] - m.brokerCPU[from],
		mallocs: z.mallocs - a.mallocs, bytes: z.bytes - a.bytes, gcs: z.gcs - a.gcs}
}

// Per-window figures; 0 when the window is missing.
func (w window) rate() float64 { return div(w.msgs, w.d.Seconds()) }

func (w window) cpuPerMsg() float64 { return div(w.cpu.Seconds(), w.msgs) }

func (w window) brokerPerMsg() float64 { return div(w.broker.Seconds(), w.msgs) }

func (w window) allocsPerMsg() float64 { return div(float64(w.mallocs), w.msgs) }

func (w window) bytesPerMsg() float64 { return div(float64(w.bytes), w.msgs) }

// in returns f of m's window from snapshot from, for medianOf.
func in(from string, f func(window) float64) func(measurement) float64 {
	return func(m measurement) float64 { return f(m.window(from)) }
}

// sinceAt returns how long after the start snapshot from was taken, in
// seconds, for medianOf.
func sinceAt(from string) func(measurement) float64 {
	return func(m measurement) float64 { return m.snaps[from].at.Seconds() }
}

// byHWM is the peak RSS in kB, for medianOf.
func byHWM(m measurement) float64 { return float64(m.hwm) }

// haveJoined reports whether every run has a session-start snapshot.
func haveJoined(ms ...[]measurement) bool {
	for _, runs := range ms {
		for _, m := range runs {
			if _, ok := m.snaps[snapJoined]; !ok {
				return false
			}
		}
	}
	return true
}

// atLeast formats ratio v, bold, with how it stands against a lower bound.
func atLeast(v, target float64) string {
	word := "meets"
	if v < target {
		word = "**below**"
	}
	return fmt.Sprintf("**%s** (target ≥ %.2f: %s)", ratio(v), target, word)
}

// atMost formats ratio v, bold, with how it stands against an upper bound.
func atMost(v, target float64) string {
	word := "meets"
	if v > target {
		word = "**above**"
	}
	return fmt.Sprintf("**%s** (target ≤ %.2f: %s)", ratio(v), target, word)
}

// div is a/b, or 0 when b is 0.
func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// micros formats a per-message duration in microseconds.
func micros(d time.Duration) string { return fmt.Sprintf("%.2f µs", float64(d)/1e3) }

// windowRates lists each run's rate in its window from snapshot from.
func windowRates(ms []measurement, from string) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = rate(m.window(from).rate())
	}
	return "[" + strings.Join(s, " ") + "]"
}
