package promcheck

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// ---------------------------------------------------------------------------
// Checking a parsed expression: what each sub-expression yields (scalar,
// instant vector, range vector) and which labels its series carry.

type valKind int

const (
	vScalar valKind = iota
	vString
	vVector
	vMatrix
)

func (k valKind) String() string {
	return [...]string{"scalar", "string", "instant vector", "range vector"}[k]
}

type value struct {
	kind    valKind
	labels  map[string]bool
	metrics []string // the metrics it is computed from, for messages
	any     bool     // from an unknown metric: labels unknown, checks skipped
}

func (v value) has(l string) bool { return v.any || v.labels[l] }

func (v value) names() string {
	if len(v.metrics) == 0 {
		return "the expression"
	}
	return strings.Join(v.metrics, ", ")
}

func (v value) labelList() string {
	if len(v.labels) == 0 {
		return "none"
	}
	return strings.Join(sortedKeys(v.labels), ", ")
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func labelSet(ls ...string) map[string]bool {
	m := map[string]bool{}
	for _, l := range ls {
		m[l] = true
	}
	return m
}

func vector(v value, labels map[string]bool) value {
	return value{kind: vVector, labels: labels, metrics: v.metrics, any: v.any}
}

func merge(a, b value, labels map[string]bool) value {
	return value{kind: vVector, labels: labels, metrics: append(slices.Clone(a.metrics), b.metrics...), any: a.any || b.any}
}

type fnClass int

const (
	fnCounter      fnClass = iota // rate, irate, increase, resets: range vector of a counter
	fnRange                       // other functions of a range vector
	fnSame                        // instant vector in, same labels out
	fnQuantile                    // histogram_quantile
	fnScalar                      // scalar(v)
	fnVector                      // vector(s)
	fnNoArgs                      // time() and friends
	fnAbsent                      // absent(v)
	fnLabelReplace                // label_replace, label_join
)

var functions = map[string]fnClass{
	"rate": fnCounter, "irate": fnCounter, "increase": fnCounter, "resets": fnCounter,
	"delta": fnRange, "idelta": fnRange, "deriv": fnRange, "changes": fnRange, "predict_linear": fnRange,
	"avg_over_time": fnRange, "min_over_time": fnRange, "max_over_time": fnRange, "sum_over_time": fnRange,
	"count_over_time": fnRange, "last_over_time": fnRange, "present_over_time": fnRange, "stddev_over_time": fnRange,
	"stdvar_over_time": fnRange, "quantile_over_time": fnRange, "absent_over_time": fnRange,
	"abs": fnSame, "ceil": fnSame, "floor": fnSame, "round": fnSame, "exp": fnSame, "ln": fnSame, "log2": fnSame,
	"log10": fnSame, "sqrt": fnSame, "sgn": fnSame, "clamp": fnSame, "clamp_min": fnSame, "clamp_max": fnSame,
	"sort": fnSame, "sort_desc": fnSame, "timestamp": fnSame,
	"histogram_quantile": fnQuantile, "scalar": fnScalar, "vector": fnVector, "absent": fnAbsent,
	"time": fnNoArgs, "pi": fnNoArgs,
	"label_replace": fnLabelReplace, "label_join": fnLabelReplace,
}

func isCounterFn(fn string) bool {
	class, ok := functions[fn]
	return ok && class == fnCounter
}

type exprChecker struct {
	schema      Schema
	metadata    bool   // a variable query: raw series are fine, no filter required
	filterLabel string // a label that must be filtered with label=~"$label"; "" for none
	unknown     func(string) string
	report      func(string)
	metrics     map[string]bool
	selectors   []Selector
	quantiles   map[Quantile]bool
}

func (c *exprChecker) parseAndEval(src string) value {
	n, err := parse(src)
	if err != nil {
		c.report("syntax error: " + err.Error())
		return value{any: true, kind: vVector}
	}
	v := c.eval(n, "", false)
	if v.kind == vMatrix && !c.metadata {
		c.report(fmt.Sprintf("the result is a range vector (%s); a panel needs an instant vector: wrap it in rate() or the like", v.names()))
	}
	return v
}

// wantVector reports a range vector or string where an instant vector
// belongs.
func (c *exprChecker) wantVector(v value, where string) {
	if v.kind == vMatrix || v.kind == vString {
		c.report(fmt.Sprintf("%s: got a %s (%s) where an instant vector belongs", where, v.kind, v.names()))
	}
}

// eval: fn is the function whose direct argument n is; inQuantile says n
// is inside histogram_quantile.
func (c *exprChecker) eval(n node, fn string, inQuantile bool) value {
	switch n := n.(type) {
	case *numberLit:
		return value{kind: vScalar}
	case *stringLit:
		return value{kind: vString}
	case *paren:
		return c.eval(n.expr, fn, inQuantile)
	case *unary:
		return c.eval(n.expr, "", inQuantile)
	case *subquery:
		v := c.eval(n.expr, "", inQuantile)
		c.wantVector(v, "subquery")
		v.kind = vMatrix
		return v
	case *selector:
		return c.selector(n, fn, inQuantile)
	case *aggregation:
		return c.aggregation(n, inQuantile)
	case *binary:
		return c.binary(n, inQuantile)
	case *call:
		return c.call(n, inQuantile)
	}
	panic(fmt.Sprintf("unknown node %T", n))
}

func (c *exprChecker) selector(s *selector, fn string, inQuantile bool) value {
	if s.name == "" {
		c.report("a selector without a metric name ({...}): name the worker metric")
		return value{kind: vVector, any: true}
	}
	base, suffix, def, problem := c.schema.Resolve(s.name)
	if problem != "" && def.Kind == "" && c.unknown != nil {
		problem = c.unknown(s.name)
	}
	if c.metrics == nil {
		c.metrics = map[string]bool{}
	}
	c.metrics[base] = true
	c.selectors = append(c.selectors, Selector{Metric: base, Func: fn, Matchers: exportMatchers(s.matchers)})
	v := value{kind: vVector, metrics: []string{s.name}}
	if s.rng != "" {
		v.kind = vMatrix
	}
	if problem != "" {
		c.report(problem)
		v.any = true
		return v
	}
	if def.Kind == Histogram && suffix == "" {
		c.report(fmt.Sprintf("%s is a histogram: Prometheus stores it as %s_bucket, %s_sum and %s_count, not under its own name", base, base, base, base))
		v.any = true
		return v
	}
	v.labels = map[string]bool{}
	for _, l := range def.Labels {
		v.labels[l] = true
	}
	if suffix == "_bucket" {
		v.labels["le"] = true
	}
	hasLe, filtered := false, false
	for _, m := range s.matchers {
		if !v.labels[m.label] {
			c.report(fmt.Sprintf("%s{%s%s%q}: %q is not a label of %s (its labels: %s)", s.name, m.label, m.op, m.value, m.label, s.name, v.labelList()))
			continue
		}
		hasLe = hasLe || (m.label == "le" && m.op == "=")
		filtered = filtered || (m.label == c.filterLabel && m.op == "=~" && strings.Trim(m.value, "${}") == c.filterLabel)
		if allowed, ok := def.Values[m.label]; ok && !strings.Contains(m.value, "$") {
			values := []string{m.value}
			if m.op == "=~" || m.op == "!~" {
				if !plainAlternatives.MatchString(m.value) {
					continue // a real regex: cannot tell
				}
				values = strings.Split(m.value, "|")
			}
			for _, val := range values {
				if !slices.Contains(allowed, val) {
					c.report(fmt.Sprintf("%s%s%q: %s has no %s %q (it has: %s)", m.label, m.op, m.value, base, m.label, val, strings.Join(allowed, ", ")))
				}
			}
		}
	}
	if c.metadata {
		return v
	}
	if c.filterLabel != "" && v.labels[c.filterLabel] && !filtered {
		c.report(fmt.Sprintf(`%s: filter it with %s=~"$%[2]s", so the %[2]s variable applies`, s.name, c.filterLabel))
	}
	isCounter := def.Kind == Counter || suffix != ""
	switch {
	case isCounter && !isCounterFn(fn):
		c.report(fmt.Sprintf("%s is a counter: wrap it in rate() or increase() over a range", s.name))
	case !isCounter && isCounterFn(fn):
		c.report(fmt.Sprintf("%s is a gauge: %s() of a gauge means nothing; use its value, or deriv()/delta()", s.name, fn))
	}
	if suffix == "_bucket" && !inQuantile && !hasLe {
		c.report(fmt.Sprintf(`%s: use it inside histogram_quantile(), or pick one bucket with le="..."`, s.name))
	}
	return v
}

func (c *exprChecker) aggregation(a *aggregation, inQuantile bool) value {
	if a.param != nil {
		c.eval(a.param, "", inQuantile)
	}
	v := c.eval(a.expr, "", inQuantile)
	c.wantVector(v, a.op+"()")
	clause := "by"
	if a.without {
		clause = "without"
	}
	for _, l := range a.grouping {
		if !v.has(l) {
			c.report(fmt.Sprintf("%s %s (%s): %q is not a label of %s (its labels: %s)",
				a.op, clause, strings.Join(a.grouping, ", "), l, v.names(), v.labelList()))
		}
	}
	switch {
	case a.op == "topk" || a.op == "bottomk" || a.op == "limitk" || a.op == "limit_ratio":
		return vector(v, v.labels) // they keep the series as they are
	case !a.hasGrouping:
		return vector(v, map[string]bool{})
	case a.without:
		out := map[string]bool{}
		for l := range v.labels {
			if !slices.Contains(a.grouping, l) {
				out[l] = true
			}
		}
		return vector(v, out)
	default:
		return vector(v, labelSet(a.grouping...))
	}
}

func (c *exprChecker) binary(b *binary, inQuantile bool) value {
	l, r := c.eval(b.lhs, "", inQuantile), c.eval(b.rhs, "", inQuantile)
	c.wantVector(l, "left of "+b.op)
	c.wantVector(r, "right of "+b.op)
	switch {
	case l.kind == vScalar && r.kind == vScalar:
		return value{kind: vScalar}
	case l.kind == vScalar:
		return r
	case r.kind == vScalar:
		return l
	}
	for _, lbl := range b.matching {
		if b.on && (!l.has(lbl) || !r.has(lbl)) {
			c.report(fmt.Sprintf("%s on (%s): %q is not a label of both sides (%s: %s; %s: %s)",
				b.op, strings.Join(b.matching, ", "), lbl, l.names(), l.labelList(), r.names(), r.labelList()))
		}
	}
	signature := func(v value) map[string]bool {
		if b.on {
			return labelSet(b.matching...)
		}
		out := map[string]bool{}
		for lbl := range v.labels {
			if !slices.Contains(b.matching, lbl) {
				out[lbl] = true
			}
		}
		return out
	}
	sl, sr := signature(l), signature(r)
	isSet := b.op == "and" || b.op == "or" || b.op == "unless"
	if l.any || r.any || isSet {
		return merge(l, r, l.labels)
	}
	switch b.card {
	case "":
		if !maps.Equal(sl, sr) {
			c.report(fmt.Sprintf("%s between series labelled {%s} (%s) and {%s} (%s): no series can match; aggregate both sides to the same labels, or use on()/ignoring()",
				b.op, strings.Join(sortedKeys(sl), ", "), l.names(), strings.Join(sortedKeys(sr), ", "), r.names()))
		}
		if b.hasMatching && b.on {
			return merge(l, r, labelSet(b.matching...))
		}
		return merge(l, r, sl)
	case "group_left", "group_right":
		many, one := l, r
		if b.card == "group_right" {
			many, one = r, l
		}
		for _, lbl := range b.include {
			if !one.has(lbl) {
				c.report(fmt.Sprintf("%s(%s): %q is not a label of %s", b.card, strings.Join(b.include, ", "), lbl, one.names()))
			}
		}
		out := labelSet(b.include...)
		for lbl := range many.labels {
			out[lbl] = true
		}
		return merge(l, r, out)
	}
	return merge(l, r, l.labels)
}

func (c *exprChecker) call(f *call, inQuantile bool) value {
	class, ok := functions[f.fn]
	if !ok {
		c.report(fmt.Sprintf("unknown function %s()", f.fn))
		for _, arg := range f.args {
			c.eval(arg, "", inQuantile)
		}
		return value{kind: vVector, any: true}
	}
	argc := 1
	switch class {
	case fnNoArgs:
		argc = 0
	case fnQuantile:
		argc = 2
	case fnLabelReplace:
		argc = 4
	}
	if len(f.args) < argc {
		c.report(fmt.Sprintf("%s() wants %d argument(s), has %d", f.fn, argc, len(f.args)))
		return value{kind: vVector, any: true}
	}
	switch class {
	case fnCounter, fnRange:
		// The range vector is the first argument, or the second of quantile_over_time.
		idx := 0
		if f.fn == "quantile_over_time" {
			idx = 1
		}
		var v value
		for i, arg := range f.args {
			if i == idx {
				v = c.eval(arg, f.fn, inQuantile)
			} else {
				c.eval(arg, "", inQuantile)
			}
		}
		if v.kind != vMatrix {
			c.report(fmt.Sprintf("%s() needs a range vector such as %s[5m], got a %s", f.fn, v.names(), v.kind))
		}
		if f.fn == "absent_over_time" {
			return vector(v, map[string]bool{})
		}
		return vector(v, v.labels)
	case fnQuantile:
		c.eval(f.args[0], "", inQuantile)
		v := c.eval(f.args[1], "", true)
		c.wantVector(v, "histogram_quantile()")
		if !v.has("le") {
			c.report(fmt.Sprintf("histogram_quantile needs the le label, and %s has lost it: aggregate with by (le, ...)", v.names()))
		}
		if phi, ok := f.args[0].(*numberLit); ok {
			for _, m := range v.metrics {
				if base, ok := strings.CutSuffix(m, "_bucket"); ok {
					c.quantiles[Quantile{Phi: phi.text, Histogram: base}] = true
				}
			}
		}
		out := map[string]bool{}
		for l := range v.labels {
			if l != "le" {
				out[l] = true
			}
		}
		return vector(v, out)
	case fnLabelReplace:
		v := c.eval(f.args[0], "", inQuantile)
		c.wantVector(v, f.fn+"()")
		out := map[string]bool{}
		for l := range v.labels {
			out[l] = true
		}
		var strs []string
		for _, arg := range f.args[1:] {
			s, ok := arg.(*stringLit)
			if !ok {
				c.report(fmt.Sprintf("%s(): arguments after the first must be strings", f.fn))
				return vector(v, out)
			}
			strs = append(strs, s.text)
		}
		var sources []string
		if f.fn == "label_replace" {
			sources = strs[2:3] // (v, dst, replacement, src, regex)
		} else {
			sources = strs[2:] // (v, dst, separator, src...)
		}
		for _, src := range sources {
			if src != "" && !v.has(src) {
				c.report(fmt.Sprintf("%s(): source label %q is not a label of %s", f.fn, src, v.names()))
			}
		}
		out[strs[0]] = true
		return vector(v, out)
	}
	var v value
	for i, arg := range f.args {
		av := c.eval(arg, "", inQuantile)
		if i == 0 {
			v = av
		}
	}
	switch class {
	case fnSame:
		c.wantVector(v, f.fn+"()")
		return v
	case fnScalar, fnNoArgs:
		return value{kind: vScalar, metrics: v.metrics}
	case fnVector, fnAbsent:
		return vector(v, map[string]bool{})
	}
	return v
}
