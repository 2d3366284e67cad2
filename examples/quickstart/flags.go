package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/kafkaworker/kafkaworker/worker"
)

// applyOverrides applies what the quickstart sets over the environment's
// configuration, and says so for each setting the environment also set:
// the ordering, because the per-key order check needs key ordering; the
// concurrency, from -concurrency when given or when WORKER_CONCURRENCY is
// unset.
func applyOverrides(cfg *worker.Config, o options) {
	if env := os.Getenv("WORKER_ORDERING"); env != "" && env != string(worker.OrderByKey) {
		fmt.Fprintf(os.Stderr, "WORKER_ORDERING=%s overridden: the quickstart checks per-key order, so it orders by key\n", env)
	}
	cfg.Ordering = worker.OrderByKey
	flagSet := slices.Contains(o.set, "concurrency")
	env := os.Getenv("WORKER_CONCURRENCY")
	switch {
	case flagSet && env != "" && env != strconv.Itoa(o.concurrency):
		fmt.Fprintf(os.Stderr, "WORKER_CONCURRENCY=%s overridden by -concurrency %d\n", env, o.concurrency)
		cfg.Concurrency = o.concurrency
	case flagSet || env == "":
		cfg.Concurrency = o.concurrency
	}
}

// failureRates describes the simulated failures, -flaky and -poison.
func failureRates(o options) string {
	rate := func(oneIn int, what string) string {
		if oneIn == 0 {
			return "no message " + what
		}
		return fmt.Sprintf("about 1 message in %d %s", oneIn, what)
	}
	return rate(o.flakyOneIn, "fails once") + ", " + rate(o.poisonOneIn, "fails for good")
}

// hostPort is addr for a URL: a wildcard listen address becomes localhost.
func hostPort(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// linger keeps the process, and so the endpoint server, up for d after the
// summary, or until Ctrl-C or SIGTERM.
func linger(d time.Duration, addr net.Addr) {
	if d <= 0 {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "serving http://%s/status for %v more (the worker has stopped; its final numbers stay); Ctrl-C to quit\n", hostPort(addr), d)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}
