// Command kafkaworker is the operator's tool for a kafkaworker fleet: topics,
// consumer groups and their lag (with the done-set a worker keeps beside its
// commits decoded), producing and consuming records, inspecting and
// replaying the dead-letter topic, resetting a group's offsets, and a local
// embedded broker for development. It connects with the worker's own
// settings (KAFKA_BROKERS, KAFKA_TLS_*, KAFKA_SASL_*), built by the worker's
// code; --brokers overrides the addresses.
//
//	go install github.com/kafkaworker/kafkaworker/cmd/kafkaworker@latest
//	kafkaworker groups describe orders-worker
//
// See README.md in this directory for the recipes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status: 0, or 1
// after printing a one-line error to stderr. Tests call it in process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = errors.New("interrupted")
		}
		fmt.Fprintln(stderr, "kafkaworker: "+oneLine(err))
		return 1
	}
	return 0
}

// oneLine folds a multi-line error (a configuration error lists one problem
// per line) into one line, without the "kafkaworker: " prefixes the worker
// package puts on its errors (the command prints one).
func oneLine(err error) string {
	msg := strings.ReplaceAll(err.Error(), "kafkaworker: ", "")
	msg = strings.Replace(msg, "Did you mean this?", "did you mean:", 1) // cobra's suggestion
	var b strings.Builder
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "- "))
		if l == "" {
			continue
		}
		if b.Len() > 0 {
			if strings.HasSuffix(b.String(), ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(l)
	}
	return b.String()
}
