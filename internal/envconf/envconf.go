// Package envconf reads a configuration struct from the environment with
// the module's rules, for every public Config that has KAFKA_* variables
// (worker.Config, producer.Config): a variable the user set is never
// replaced by a default, a value that does not parse is an error that
// names the variable and echoes the value, and a variable set to nothing
// (or only spaces) is an error too, except where an empty value has a
// meaning of its own. The rules about the connection settings themselves
// (the KAFKA_BOOTSTRAP_SERVERS alias, TLS and SASL) are kconn.Conn's.
package envconf

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Environ turns os.Environ's KEY=value list into a map.
func Environ(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		if k, v, ok := strings.Cut(e, "="); ok {
			m[k] = v
		}
	}
	return m
}

// Aliases maps another name of a variable to the variable it stands for:
// KAFKA_BOOTSTRAP_SERVERS, Kafka's own name, for KAFKA_BROKERS.
var Aliases = map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "KAFKA_BROKERS"}

// Vars lists every variable the struct type t reads, with its field: the
// env tags, and the aliases of those.
func Vars(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if name := f.Tag.Get("env"); name != "" {
			out[name] = f
		}
	}
	for alias, name := range Aliases {
		if f, ok := out[name]; ok {
			out[alias] = f
		}
	}
	return out
}

// Read parses environ into dst, a pointer to a struct whose fields carry
// env (and envDefault) tags, and returns the problems found: variables set
// to nothing that have no meaning when empty (emptyMeans lists those that
// do), and values that do not parse. It also returns environ with values of
// only spaces made empty, which the caller's further checks should read.
// Aliases are left to the caller (kconn.Conn.FinishEnv).
func Read(dst any, environ map[string]string, emptyMeans map[string]string) (problems []string, cleaned map[string]string) {
	t := reflect.TypeOf(dst).Elem()
	problems = emptyProblems(t, environ, emptyMeans)
	// A value of only spaces is empty too: parse it as unset, so the
	// variable gets one problem (above), not a parse error as well.
	cleaned = maps.Clone(environ)
	for name, v := range cleaned {
		if strings.TrimSpace(v) == "" {
			cleaned[name] = ""
		}
	}
	err := env.ParseWithOptions(dst, env.Options{Environment: cleaned})
	return append(problems, parseProblems(t, err, cleaned)...), cleaned
}

// Defaults fills dst (a pointer to a struct with env tags) with exactly
// its envDefault tags, so the defaults live in one place. It panics if a
// tag does not parse: a programming error.
func Defaults(dst any) {
	if err := env.ParseWithOptions(dst, env.Options{Environment: map[string]string{}}); err != nil {
		panic("kafkaworker: envDefault tags do not parse: " + err.Error())
	}
}

// Merge is the problems of reading (Read's, and the caller's own) with
// those validation found in the values left behind, less any about a
// variable that already has a problem from reading: what validation says
// of a value that did not parse, or was set empty, would only mislead. The
// result is sorted, without duplicates, and nil when there is none.
func Merge(read, validation []string) []string {
	out := slices.Clone(read)
	for _, v := range validation {
		if !slices.ContainsFunc(read, func(p string) bool { return VarName(p) == VarName(v) }) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// emptyProblems reports every variable set to nothing that has no meaning
// when empty.
func emptyProblems(t reflect.Type, environ map[string]string, emptyMeans map[string]string) []string {
	var out []string
	for name, f := range Vars(t) {
		v, ok := environ[name]
		if !ok || strings.TrimSpace(v) != "" {
			continue
		}
		if _, meaningful := emptyMeans[name]; meaningful {
			continue
		}
		switch def, hasDefault := f.Tag.Lookup("envDefault"); {
		case hasDefault:
			out = append(out, fmt.Sprintf("%s=%q: set but empty: give it a value, or unset it for the default (%s)", name, v, def))
		default:
			out = append(out, fmt.Sprintf("%s=%q: set but empty: give it a value, or unset it", name, v))
		}
	}
	return out
}

// parseProblems turns caarlos0/env's errors, which name struct fields,
// into problems that name the environment variable the user actually set
// and echo its value.
func parseProblems(t reflect.Type, err error, environ map[string]string) []string {
	if err == nil {
		return nil
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			name := pe.Name
			if f, ok := t.FieldByName(pe.Name); ok {
				name = f.Tag.Get("env")
			}
			out = append(out, fmt.Sprintf("%s=%q: cannot parse as %s: %v", name, environ[name], describeType(pe.Type), unwrapAll(pe.Err)))
			continue
		}
		out = append(out, e.Error())
	}
	return out
}

func describeType(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return `a Go duration such as "500ms", "10s" or "1m"`
	case reflect.TypeFor[int]():
		return "a whole number"
	case reflect.TypeFor[bool]():
		return "true or false"
	case reflect.TypeFor[[]time.Duration]():
		return `a comma-separated list of Go durations such as "10s,1m,10m"`
	}
	return t.String()
}

func unwrapAll(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// VarName is the variable a problem is about: what precedes its first
// ":" or "=" ("WORKER_CONCURRENCY" of `WORKER_CONCURRENCY="abc": ...`).
func VarName(problem string) string {
	if i := strings.IndexAny(problem, ":="); i >= 0 {
		return problem[:i]
	}
	return problem
}

// TrimList drops the spaces around each element and the empty ones; nil
// when none is left.
func TrimList(in []string) []string {
	out := in[:0]
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Render prints a Config's allow-listed log attributes (its LogValue's
// group) as name{key=value ...}: what a Config's String shows, so fmt's %v
// and %+v print no credentials either.
func Render(name string, attrs []slog.Attr) string {
	var b strings.Builder
	b.WriteString(name + "{")
	for i, a := range attrs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%v", a.Key, a.Value)
	}
	b.WriteString("}")
	return b.String()
}
