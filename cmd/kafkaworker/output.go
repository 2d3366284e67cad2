package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// format is the -o/--format flag of a command that prints a table.
type format struct{ value string }

func (f *format) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.value, "format", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

// json reports whether JSON was asked for, and rejects unknown formats.
func (f *format) json() (bool, error) {
	switch f.value {
	case "table", "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fmt.Errorf("--format %q: use table or json", f.value)
}

// table is rows of cells printed aligned in columns.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// print writes the table. When cutLast > 0 the last column is cut so a line
// fits in that many columns (it holds free text such as an error message).
func (t *table) print(w io.Writer, cutLast int) error {
	if cutLast > 0 {
		t.cutLastColumn(cutLast)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func (t *table) cutLastColumn(width int) {
	used := 0
	for i := 0; i < len(t.header)-1; i++ {
		w := utf8.RuneCountInString(t.header[i])
		for _, r := range t.rows {
			w = max(w, utf8.RuneCountInString(r[i]))
		}
		used += w + 2
	}
	room := max(width-used, 20)
	for _, r := range t.rows {
		last := &r[len(r)-1]
		if utf8.RuneCountInString(*last) > room {
			*last = string([]rune(*last)[:room-1]) + "…"
		}
	}
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// printable renders bytes for a terminal: as they are when they are UTF-8
// text without control characters, Go-quoted otherwise (so binary keys and
// line breaks cannot garble a table). nil is "-".
func printable(b []byte) string {
	if b == nil {
		return "-"
	}
	s := string(b)
	if utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0 && s != "" && s != "-" {
		return s
	}
	return strconv.Quote(s)
}

// oneLineText replaces line breaks and tabs so free text fits a table cell.
func oneLineText(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// jsonBytes is how a key, value or header value appears in JSON output:
// Text when the bytes are valid UTF-8, Base64 (standard encoding, padded)
// otherwise; both absent for nil.
type jsonBytes struct {
	Text   *string `json:"text,omitempty"`
	Base64 *string `json:"base64,omitempty"`
}

func encodeBytes(b []byte) *jsonBytes {
	if b == nil {
		return nil
	}
	if utf8.Valid(b) {
		s := string(b)
		return &jsonBytes{Text: &s}
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &jsonBytes{Base64: &s}
}

// termWidth is the width of the terminal on stdout, or 0 when stdout is not
// a terminal (output to a pipe or file is not cut). $COLUMNS wins.
func termWidth(w io.Writer) int {
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	return terminalColumns(f)
}

// isTerminal reports whether w is a terminal (for the progress bar).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
