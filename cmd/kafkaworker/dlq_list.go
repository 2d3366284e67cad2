package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func dlqListCmd(g *globals) *cobra.Command {
	var (
		sel    selector
		f      format
		values bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead letters: where they came from, how often they failed, and why",
		Long: `List the dead letters in a dead-letter topic, oldest first in each partition:
the DLQ partition@offset, the original topic/partition@offset, the deliveries
made, the error type and text (cut to the terminal width), when it failed, and
the key. Payloads are shown only with --values. --format json prints one JSON
object per line, with the full error text (keys and values as consume's JSON).`,
		Example: `  kafkaworker dlq list --topic orders --group orders-worker
  kafkaworker dlq list --dlq-topic orders.orders-worker.dlq --error-type panic --since 24h
  kafkaworker dlq list --topic orders --group orders-worker -o json | jq -r .error_type | sort | uniq -c`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := f.json()
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			topic, err := sel.resolve(c, time.Now())
			if err != nil {
				return err
			}
			spec, err := c.rangeSpec(topic, -1, position{kind: "oldest"}, false)
			if err != nil {
				return err
			}
			return listDeadLetters(cmd, c, &sel, spec, asJSON, values)
		},
	}
	sel.register(cmd)
	f.register(cmd)
	cmd.Flags().BoolVar(&values, "values", false, "also print each dead letter's value (the payload)")
	return cmd
}

func listDeadLetters(cmd *cobra.Command, c *conn, sel *selector, spec readSpec, asJSON, values bool) error {
	w := cmd.OutOrStdout()
	header := []string{"DLQ", "ORIGINAL", "ATTEMPTS", "ERROR TYPE", "FAILED AT", "KEY"}
	if values {
		header = append(header, "VALUE")
	}
	t := table{header: append(header, "ERROR")}
	var found []deadLetter
	seen, matched, err := scanDLQ(cmd.Context(), c, sel, spec, cmd.ErrOrStderr(), nil, func(d deadLetter) error {
		if asJSON {
			return printJSON(w, toJSON(d, values))
		}
		found = append(found, d)
		return nil
	})
	for _, d := range sortDeadLetters(found) {
		t.rows = append(t.rows, row(d, values))
	}
	if err != nil {
		return err
	}
	if asJSON {
		return nil
	}
	if matched == 0 {
		fmt.Fprintf(w, "no dead letters match in %s (%d record(s) read)\n", spec.topic, seen)
		return nil
	}
	if err := t.print(w, termWidth(w)); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d dead letter(s) match, of %d in %s\n", matched, seen, spec.topic)
	return nil
}
