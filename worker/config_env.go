package worker

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Reading Config from the environment. A variable the user set is never
// replaced by a default: a value that does not parse is an error that
// echoes it, and so is a variable set to nothing, except where an empty
// value has a meaning of its own (emptyMeans).

// emptyMeans lists the variables that may be set to an empty value, and
// what that means. Every other variable set to nothing (or only spaces) is
// an error: it usually comes from a template or a secret that did not
// render, and silently running on the default would hide that.
var emptyMeans = map[string]string{
	"RETRY_TOPIC_DELAYS": "no retry topics",
	"METRICS_ADDR":       "serve no endpoints",
	"KAFKA_INSTANCE_ID":  "no static membership",
}

// ConfigFromEnv reads the Config from the process environment and validates
// it. The error, if any, names every offending variable, the value it was
// given and what to do.
func ConfigFromEnv() (Config, error) {
	return configFrom(envMap(os.Environ()))
}

func envMap(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		if k, v, ok := strings.Cut(e, "="); ok {
			m[k] = v
		}
	}
	return m
}

// envVars lists every variable Config reads, with its field: the env tags,
// and KAFKA_BOOTSTRAP_SERVERS, the alias of KAFKA_BROKERS.
func envVars() map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		if name := f.Tag.Get("env"); name != "" {
			out[name] = f
		}
	}
	out["KAFKA_BOOTSTRAP_SERVERS"] = out["KAFKA_BROKERS"]
	return out
}

func configFrom(environ map[string]string) (Config, error) {
	var c Config
	problems := emptyProblems(environ)
	// A value of only spaces is empty too: parse it as unset, so the
	// variable gets one problem (above), not a parse error as well.
	environ = maps.Clone(environ)
	for name, v := range environ {
		if strings.TrimSpace(v) == "" {
			environ[name] = ""
		}
	}
	err := env.ParseWithOptions(&c, env.Options{Environment: environ})
	problems = append(problems, envProblems(err, environ)...)

	// caarlos0/env treats an empty variable as unset and would apply the
	// default; RETRY_TOPIC_DELAYS set to nothing means "no retry topics".
	if v, ok := environ["RETRY_TOPIC_DELAYS"]; ok && strings.TrimSpace(v) == "" {
		c.RetryTopicDelays = nil
	}

	alias := strings.TrimSpace(environ["KAFKA_BOOTSTRAP_SERVERS"])
	primary := strings.TrimSpace(environ["KAFKA_BROKERS"])
	switch {
	case alias != "" && primary != "" && alias != primary:
		problems = append(problems, fmt.Sprintf("KAFKA_BROKERS=%q and KAFKA_BOOTSTRAP_SERVERS=%q disagree: set one of them", primary, alias))
	case alias != "" && primary == "":
		c.Brokers = strings.Split(alias, ",")
	}
	c.Brokers = trimList(c.Brokers)
	c.Topics = trimList(c.Topics)
	if v, ok := environ["KAFKA_TLS_ENABLED"]; ok && c.security().TLSOn() && !c.TLSEnabled && strings.TrimSpace(v) != "" {
		problems = append(problems, fmt.Sprintf("KAFKA_TLS_ENABLED=%q, but other KAFKA_TLS_* variables are set, which turn TLS on: unset one or the other", v))
	}
	// Kafka's own names for where a new group starts.
	if alias, ok := initialOffsetAliases[c.InitialOffset]; ok {
		c.InitialOffset = alias
	}

	if err := c.Validate(); err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return Config{}, err
		}
		// A variable that did not parse, or was set empty, already has its
		// problem; what Validate says of the value left behind would only
		// mislead.
		parsed := slices.Clone(problems) // only those problems, not the ones appended below
		for _, v := range ve.Problems {
			if !slices.ContainsFunc(parsed, func(p string) bool { return varName(p) == varName(v) }) {
				problems = append(problems, v)
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return Config{}, &ValidationError{Problems: dedupe(problems)}
	}
	return c, nil
}

// emptyProblems reports every variable set to nothing that has no meaning
// when empty (see emptyMeans).
func emptyProblems(environ map[string]string) []string {
	var out []string
	for name, f := range envVars() {
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

// envProblems turns caarlos0/env's errors, which name struct fields, into
// problems that name the environment variable the user actually set and
// echo its value.
func envProblems(err error, environ map[string]string) []string {
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
			if f, ok := reflect.TypeFor[Config]().FieldByName(pe.Name); ok {
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

// varName is the variable a problem is about: what precedes its first
// ":" or "=" ("WORKER_CONCURRENCY" of `WORKER_CONCURRENCY="abc": ...`).
func varName(problem string) string {
	if i := strings.IndexAny(problem, ":="); i >= 0 {
		return problem[:i]
	}
	return problem
}

func trimList(in []string) []string {
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

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
