// Package promcheck checks PromQL expressions, as dashboards use them,
// against a schema of metrics: that every metric exists, every label named
// is one of its labels (in matchers, by/without, on/ignoring, label_values
// and histogram_quantile's le), label values with a closed set are real,
// counters are wrapped in rate() or increase() and gauges are not, a
// histogram is read through its _bucket, _sum and _count series, and a
// panel's result is an instant vector. It is a small hand-written parser,
// enough for Grafana dashboards (selectors, functions, aggregations,
// binary operators with vector matching, ranges, subqueries, Grafana
// variables standing for durations), not all of PromQL.
package promcheck

import (
	"fmt"
	"regexp"
	"strings"
)

// Kind is how Prometheus types a metric.
type Kind string

// The metric kinds.
const (
	Counter   Kind = "counter"
	Gauge     Kind = "gauge"
	Histogram Kind = "histogram"
)

// Metric is one metric of a Schema.
type Metric struct {
	Kind   Kind
	Labels []string
	// Values lists, for labels with a closed set of values, every value.
	Values map[string][]string
}

// Schema is the metrics an expression may use, by name.
type Schema map[string]Metric

// Resolve maps a series name to its metric: the name itself, or for a
// histogram its _bucket, _sum and _count series. problem says what is
// wrong when the name is not one of the schema's series.
func (s Schema) Resolve(name string) (base, suffix string, m Metric, problem string) {
	if m, ok := s[name]; ok {
		return name, "", m, ""
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		b, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		if m, ok := s[b]; ok {
			if m.Kind != Histogram {
				return b, suf, m, fmt.Sprintf("%s is a %s, not a histogram: it has no %s series", b, m.Kind, suf)
			}
			return b, suf, m, ""
		}
	}
	return name, "", Metric{}, fmt.Sprintf("%s is not a metric of the schema", name)
}

// Options change what Check requires.
type Options struct {
	// Metadata checks a variable query's selector: raw series are fine and
	// FilterLabel is not required.
	Metadata bool
	// FilterLabel, when set, requires every selector of a metric that has
	// this label to filter it with label=~"$label" (a dashboard variable).
	FilterLabel string
	// Unknown, when set, words the problem of a metric the schema lacks.
	Unknown func(name string) string
}

// Selector is one series selector of a checked expression.
type Selector struct {
	Metric   string // the base metric name (a histogram's, for its series)
	Func     string // the function directly around it, e.g. rate; "" if none
	Matchers []Matcher
}

// Matcher is one label matcher of a Selector.
type Matcher struct{ Label, Op, Value string }

// Quantile is a histogram_quantile(Phi, ...) over Histogram's buckets.
type Quantile struct{ Phi, Histogram string }

// Result is what Check found out about an expression.
type Result struct {
	// Vector reports an instant vector result; Any that its labels are
	// unknown (a syntax error or an unknown metric, reported).
	Vector, Any bool
	Labels      map[string]bool // the labels of the result's series
	Metrics     map[string]bool // the base names of the metrics used
	Names       string          // the metrics it is computed from, for messages
	LabelList   string          // Labels, sorted, for messages
	Selectors   []Selector
	Quantiles   map[Quantile]bool
}

// Check parses expr and checks it against s, calling report once per
// problem found.
func Check(expr string, s Schema, o Options, report func(string)) Result {
	c := &exprChecker{schema: s, metadata: o.Metadata, filterLabel: o.FilterLabel, unknown: o.Unknown, report: report, quantiles: map[Quantile]bool{}}
	v := c.parseAndEval(expr)
	return Result{Vector: v.kind == vVector, Any: v.any, Labels: v.labels, Metrics: c.metrics, Names: v.names(), LabelList: v.labelList(),
		Selectors: c.selectors, Quantiles: c.quantiles}
}

// plainAlternatives is a regex matcher that is only a|b|c.
var plainAlternatives = regexp.MustCompile(`^[a-z_|]+$`)

func exportMatchers(ms []matcher) []Matcher {
	out := make([]Matcher, len(ms))
	for i, m := range ms {
		out[i] = Matcher{m.label, m.op, m.value}
	}
	return out
}
