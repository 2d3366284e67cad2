package dashboards_test

// This test keeps kafkaworker.json in step with the metrics the worker
// really exports. The metric names, their kinds (counter, gauge, histogram),
// label names and closed label values are not copied here: they come from
// metricdef.Defs, the table the worker builds its collectors from.
// Every PromQL expression of the dashboard (panel targets, rows' nested
// panels, annotations, template variable queries) goes through
// internal/promcheck, a small PromQL checker that knows each metric's labels, so a renamed metric, a
// label the metric does not have, a counter graphed without rate(), or a
// histogram_quantile that lost its le label fails the test with the panel
// title and the expression.

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kafkaworker/kafkaworker/dashboards/internal/promcheck"
	"github.com/kafkaworker/kafkaworker/internal/metricdef"
	"github.com/kafkaworker/kafkaworker/worker"
)

const dashboardFile = "kafkaworker.json"

// ---------------------------------------------------------------------------
// The tests.

func TestDashboardUsesOnlyExportedMetricsAndLabels(t *testing.T) {
	t.Parallel()
	raw := readDashboard(t)
	a := checkDashboard(raw, workerSchema(t))
	if len(a.problems) > 0 {
		t.Errorf("%s does not match the metrics the worker exports (worker/metrics.go); %d problem(s):\n%s",
			dashboardFile, len(a.problems), strings.Join(a.problems, "\n"))
	}
	if a.exprs < 20 {
		t.Errorf("only %d expressions were checked; the walk over %s missed its panels", a.exprs, dashboardFile)
	}
}

func TestDashboardCoversEveryMetricAndTopic(t *testing.T) {
	t.Parallel()
	a := checkDashboard(readDashboard(t), workerSchema(t))

	// Every metric the worker exports has a panel.
	for _, name := range metricdef.Names() {
		if !a.usesMetric(name) {
			t.Errorf("%s: no panel queries %s (listed in metricdef.Names): add one, so the dashboard shows every exported metric", dashboardFile, name)
		}
	}

	// The panels an operator looks for first.
	for _, req := range []struct {
		what string
		ok   bool
	}{
		{"throughput: rate of " + worker.MetricMessagesProcessed + " by result",
			a.hasTarget(func(t targetInfo) bool { return t.metrics[worker.MetricMessagesProcessed] && t.labels["result"] })},
		{"throughput: rate of " + worker.MetricMessagesConsumed,
			a.usesSelector(worker.MetricMessagesConsumed, "rate", "", "")},
		{"processing time p50: histogram_quantile(0.5, ... " + worker.MetricProcessingDuration + "_bucket ...)",
			a.quantiles[promcheck.Quantile{Phi: "0.5", Histogram: worker.MetricProcessingDuration}]},
		{"processing time p99: histogram_quantile(0.99, ... " + worker.MetricProcessingDuration + "_bucket ...)",
			a.quantiles[promcheck.Quantile{Phi: "0.99", Histogram: worker.MetricProcessingDuration}]},
		{"processing delay p99: histogram_quantile(0.99, ... " + worker.MetricProcessingDelay + "_bucket ...)",
			a.quantiles[promcheck.Quantile{Phi: "0.99", Histogram: worker.MetricProcessingDelay}]},
		{"lag per partition: " + worker.MetricConsumerLag + " keeping the topic and partition labels",
			a.hasTarget(func(t targetInfo) bool {
				return t.metrics[worker.MetricConsumerLag] && t.labels["topic"] && t.labels["partition"]
			})},
		{"total lag: " + worker.MetricConsumerLag + " summed without partition",
			a.hasTarget(func(t targetInfo) bool { return t.metrics[worker.MetricConsumerLag] && !t.labels["partition"] })},
		{"in flight: " + worker.MetricInFlight, a.usesSelector(worker.MetricInFlight, "", "", "")},
		{"assigned partitions: " + worker.MetricAssignedPartitions, a.usesSelector(worker.MetricAssignedPartitions, "", "", "")},
		{`retries: ` + worker.MetricMessagesProcessed + `{result="retry"}`,
			a.usesSelector(worker.MetricMessagesProcessed, "rate", "result", "retry")},
		{`retries in place: ` + worker.MetricMessagesProcessed + `{result="error"}`,
			a.usesSelector(worker.MetricMessagesProcessed, "rate", "result", "error")},
		{`dead letters: ` + worker.MetricMessagesProcessed + `{result="dead_letter"}`,
			a.usesSelector(worker.MetricMessagesProcessed, "", "result", "dead_letter")},
		{"rebalances: increase(" + worker.MetricRebalances + "[...])",
			a.usesSelector(worker.MetricRebalances, "increase", "", "")},
		{"commits by result: " + worker.MetricCommits,
			a.hasTarget(func(t targetInfo) bool { return t.metrics[worker.MetricCommits] && t.labels["result"] })},
		{"forward errors: rate of " + worker.MetricForwardErrors + " by reason",
			a.hasTarget(func(t targetInfo) bool {
				return t.metrics[worker.MetricForwardErrors] && t.labels["reason"]
			}) && a.usesSelector(worker.MetricForwardErrors, "rate", "", "")},
		{"build info table: " + worker.MetricBuildInfo + " by version, go_version, sarama_version",
			a.hasTarget(func(t targetInfo) bool {
				return t.panelType == "table" && t.metrics[worker.MetricBuildInfo] &&
					t.labels["version"] && t.labels["go_version"] && t.labels["sarama_version"]
			})},
	} {
		if !req.ok {
			t.Errorf("%s: no panel shows %s", dashboardFile, req.what)
		}
	}
}

// TestDashboardSchemaMatchesMetricNames proves the schema the checker works
// from is the worker's own: exactly metricdef.Names, and the two
// histograms are the two histograms.
func TestDashboardSchemaMatchesMetricNames(t *testing.T) {
	t.Parallel()
	s := workerSchema(t)
	var registered []string
	for name := range s {
		registered = append(registered, name)
	}
	want := metricdef.Names()
	sort.Strings(registered)
	sort.Strings(want)
	if !slices.Equal(registered, want) {
		t.Errorf("worker.New registers %v, but metricdef.Names is %v", registered, want)
	}
	for _, name := range []string{worker.MetricProcessingDuration, worker.MetricProcessingDelay} {
		if s[name].Kind != promcheck.Histogram {
			t.Errorf("%s is defined as a %s; the dashboard queries it as a histogram", name, s[name].Kind)
		}
	}
}

// ---------------------------------------------------------------------------
// Test helpers.

func readDashboard(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ---------------------------------------------------------------------------
// The worker's metrics, from the table it builds its collectors from.

// workerSchema is metricdef.Defs as a promcheck.Schema.
func workerSchema(t *testing.T) promcheck.Schema {
	t.Helper()
	s := promcheck.Schema{}
	for _, d := range metricdef.Defs() {
		s[d.Name] = promcheck.Metric{Kind: promcheck.Kind(d.Kind), Labels: d.Labels, Values: d.Values}
	}
	if len(s) == 0 {
		t.Fatal("metricdef.Defs is empty")
	}
	return s
}

func unknownMetric(name string) string {
	return fmt.Sprintf("%s is not a metric the worker exports (metricdef.Names)", name)
}

// ---------------------------------------------------------------------------
// Walking the dashboard.

type targetInfo struct {
	panelType string
	metrics   map[string]bool // base names of the worker metrics used
	labels    map[string]bool // labels of the expression's result
}

type analysis struct {
	problems  []string
	exprs     int
	targets   []targetInfo
	selectors []promcheck.Selector
	quantiles map[promcheck.Quantile]bool
}

func (a *analysis) usesMetric(name string) bool {
	return slices.ContainsFunc(a.selectors, func(s promcheck.Selector) bool { return s.Metric == name })
}

// usesSelector: some selector of metric, directly inside fn (any if ""),
// with label="value" (any if "").
func (a *analysis) usesSelector(metric, fn, label, value string) bool {
	return slices.ContainsFunc(a.selectors, func(s promcheck.Selector) bool {
		if s.Metric != metric || (fn != "" && s.Func != fn) {
			return false
		}
		return label == "" || slices.ContainsFunc(s.Matchers, func(m promcheck.Matcher) bool {
			return m.Label == label && m.Op == "=" && m.Value == value
		})
	})
}

func (a *analysis) hasTarget(ok func(targetInfo) bool) bool {
	return slices.ContainsFunc(a.targets, ok)
}

const dsUID = "${DS_PROMETHEUS}"

// Grafana's own variables, usable in any expression.
var builtinVars = map[string]bool{
	"__rate_interval": true, "__rate_interval_ms": true, "__interval": true, "__interval_ms": true,
	"__range": true, "__range_s": true, "__range_ms": true, "__from": true, "__to": true,
	"__dashboard": true, "__user": true, "__org": true, "__name": true, "__timeFilter": true,
}

var metricLike = regexp.MustCompile(`kafkaworker_[a-z_]+`)

// checkDashboard checks a dashboard against s and returns what it found.
// Each problem names where it is (panel title, target) and the expression.
func checkDashboard(raw []byte, s promcheck.Schema) *analysis {
	a := &analysis{quantiles: map[promcheck.Quantile]bool{}}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		a.problems = append(a.problems, "the dashboard is not valid JSON: "+err.Error())
		return a
	}
	for _, key := range []string{"title", "uid"} {
		if v, _ := d[key].(string); v == "" {
			a.problems = append(a.problems, fmt.Sprintf("the dashboard has no %s", key))
		}
	}
	if v, ok := d["schemaVersion"].(float64); !ok || v < 36 {
		a.problems = append(a.problems, fmt.Sprintf("schemaVersion is %v; want a Grafana 10+ schema (36 or later)", d["schemaVersion"]))
	}
	checked := map[string]bool{} // paths of the exprs checked

	// Template variables.
	vars := map[string]bool{}
	templating, _ := d["templating"].(map[string]any)
	varList, _ := templating["list"].([]any)
	for _, v := range varList {
		if v, ok := v.(map[string]any); ok {
			name, _ := v["name"].(string)
			vars[name] = true
		}
	}
	hasDS := false
	for _, v := range varList {
		v, _ := v.(map[string]any)
		name, _ := v["name"].(string)
		typ, _ := v["type"].(string)
		where := fmt.Sprintf("variable %q", name)
		switch typ {
		case "datasource":
			if q, _ := v["query"].(string); q != "prometheus" {
				a.problems = append(a.problems, fmt.Sprintf("%s: a datasource variable of query %q; want prometheus", where, q))
			}
			hasDS = hasDS || name == "DS_PROMETHEUS"
		case "query":
			a.checkDatasource(where, v["datasource"], true)
			q, _ := v["query"].(string)
			if obj, ok := v["query"].(map[string]any); ok {
				q, _ = obj["query"].(string)
			}
			if def, ok := v["definition"].(string); ok && def != q {
				a.problems = append(a.problems, fmt.Sprintf("%s: definition %q differs from query %q", where, def, q))
			}
			a.checkVariableQuery(where, q, s, vars)
		}
	}
	if !hasDS {
		a.problems = append(a.problems, `there is no datasource variable DS_PROMETHEUS (type "datasource", query "prometheus"): panels must use it so the dashboard imports anywhere`)
	}
	for _, name := range []string{"group", "topic"} {
		if !vars[name] {
			a.problems = append(a.problems, fmt.Sprintf("there is no template variable %q", name))
		}
	}

	// Panels, and the panels of collapsed rows.
	ids := map[float64]string{}
	titles := map[string]bool{}
	var walk func(panels []any, path, row string)
	walk = func(panels []any, path, row string) {
		for i, p := range panels {
			p, _ := p.(map[string]any)
			ppath := fmt.Sprintf("%s[%d]", path, i)
			title, _ := p["title"].(string)
			typ, _ := p["type"].(string)
			where := fmt.Sprintf("panel %q", title)
			if row != "" {
				where = fmt.Sprintf("panel %q (row %q)", title, row)
			}
			if title == "" {
				a.problems = append(a.problems, fmt.Sprintf("%s at %s has no title", where, ppath))
			}
			if id, ok := p["id"].(float64); !ok {
				a.problems = append(a.problems, where+": no id")
			} else if other, dup := ids[id]; dup {
				a.problems = append(a.problems, fmt.Sprintf("%s: id %v is used twice (also by %s)", where, id, other))
			} else {
				ids[id] = where
			}
			if gp, _ := p["gridPos"].(map[string]any); gp["w"] == nil || gp["h"] == nil {
				a.problems = append(a.problems, where+": no gridPos with w and h")
			}
			if typ != "row" && title != "" {
				if titles[title] {
					a.problems = append(a.problems, fmt.Sprintf("%s: two panels have this title; make titles unique, so problems and readers can tell them apart", where))
				}
				titles[title] = true
			}
			if typ == "row" {
				if children, ok := p["panels"].([]any); ok {
					walk(children, ppath+".panels", title)
				}
				continue
			}
			if typ == "text" {
				continue
			}
			a.checkDatasource(where, p["datasource"], true)
			targets, _ := p["targets"].([]any)
			if len(targets) == 0 {
				a.problems = append(a.problems, where+": no targets")
			}
			for j, tg := range targets {
				tg, _ := tg.(map[string]any)
				tpath := fmt.Sprintf("%s.targets[%d]", ppath, j)
				ref, _ := tg["refId"].(string)
				twhere := fmt.Sprintf("%s, target %s", where, ref)
				a.checkDatasource(twhere, tg["datasource"], false)
				expr, _ := tg["expr"].(string)
				if strings.TrimSpace(expr) == "" {
					a.problems = append(a.problems, twhere+": empty expr")
					continue
				}
				checked[tpath+".expr"] = true
				info := a.checkExpr(twhere, expr, s, vars)
				info.panelType = typ
				a.targets = append(a.targets, info)
			}
		}
	}
	panels, _ := d["panels"].([]any)
	walk(panels, "panels", "")
	if len(panels) == 0 {
		a.problems = append(a.problems, "the dashboard has no panels")
	}

	// Annotations with a Prometheus query.
	annotations, _ := d["annotations"].(map[string]any)
	list, _ := annotations["list"].([]any)
	for i, an := range list {
		an, _ := an.(map[string]any)
		expr, ok := an["expr"].(string)
		if !ok {
			continue
		}
		name, _ := an["name"].(string)
		where := fmt.Sprintf("annotation %q", name)
		a.checkDatasource(where, an["datasource"], true)
		checked[fmt.Sprintf("annotations.list[%d].expr", i)] = true
		a.checkExpr(where, expr, s, vars)
	}

	// Any expr elsewhere would go unchecked: say so.
	var all []string
	collectExprs(d, "", &all)
	for _, path := range all {
		if !checked[path] {
			a.problems = append(a.problems, fmt.Sprintf("expr at %s is not checked: the dashboard checker does not look there; move it into a panel target", path))
		}
	}
	return a
}

func collectExprs(v any, path string, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if _, ok := child.(string); ok && k == "expr" {
				*out = append(*out, p)
				continue
			}
			collectExprs(child, p, out)
		}
	case []any:
		for i, child := range v {
			collectExprs(child, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

func (a *analysis) checkDatasource(where string, ds any, required bool) {
	if ds == nil && !required {
		return // a target without one uses its panel's
	}
	m, _ := ds.(map[string]any)
	if m["type"] != "prometheus" || m["uid"] != dsUID {
		a.problems = append(a.problems, fmt.Sprintf(`%s: datasource must be {"type": "prometheus", "uid": %q}, not %v`, where, dsUID, ds))
	}
}

// The forms of a Prometheus variable query; only label_values reads metrics.
var (
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\((?:(.+),\s*)?(\w+)\)\s*$`)
	otherVarQuery    = regexp.MustCompile(`^\s*(label_names\(.*\)|metrics\(.*\)|query_result\((.+)\))\s*$`)
)

// reporter returns a function that records each distinct problem once,
// with where it is and the expression.
func (a *analysis) reporter(where, what, expr string) func(string) {
	seen := map[string]bool{}
	return func(p string) {
		if !seen[p] {
			seen[p] = true
			a.problems = append(a.problems, fmt.Sprintf("%s: %s\n\t%s: %s", where, p, what, expr))
		}
	}
}

func (a *analysis) checkVariableQuery(where, q string, s promcheck.Schema, vars map[string]bool) {
	report := a.reporter(where, "query", q)
	a.checkVarRefs(q, vars, report)
	a.checkNames(q, s, report)
	if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
		if m[1] == "" {
			return // label_values(label): any metric
		}
		v := a.check(m[1], s, promcheck.Options{Metadata: true, Unknown: unknownMetric}, report)
		if !v.Any && v.Vector && !v.Labels[m[2]] {
			report(fmt.Sprintf("label_values(..., %s): %q is not a label of %s (its labels: %s)", m[2], m[2], v.Names, v.LabelList))
		}
		return
	}
	if m := otherVarQuery.FindStringSubmatch(q); m != nil {
		if m[2] != "" {
			a.check(m[2], s, promcheck.Options{FilterLabel: "group", Unknown: unknownMetric}, report)
		}
		return
	}
	report("not a Prometheus variable query: use label_values(metric{...}, label)")
}

func (a *analysis) checkVarRefs(expr string, vars map[string]bool, report func(string)) {
	for _, m := range promcheck.VarRef.FindAllStringSubmatch(expr, -1) {
		name := m[1] + m[2] + m[3]
		if !vars[name] && !builtinVars[name] {
			report(fmt.Sprintf("$%s is not a template variable of the dashboard", name))
		}
	}
}

// checkNames finds every kafkaworker_ name in the text, strings included.
func (a *analysis) checkNames(expr string, s promcheck.Schema, report func(string)) {
	for _, name := range metricLike.FindAllString(expr, -1) {
		if _, _, _, p := s.Resolve(name); p != "" {
			report(unknownMetric(name))
		}
	}
}

// checkExpr checks one PromQL expression and returns what its result is.
func (a *analysis) checkExpr(where, expr string, s promcheck.Schema, vars map[string]bool) targetInfo {
	a.exprs++
	report := a.reporter(where, "expr", expr)
	a.checkVarRefs(expr, vars, report)
	a.checkNames(expr, s, report)
	v := a.check(expr, s, promcheck.Options{FilterLabel: "group", Unknown: unknownMetric}, report)
	return targetInfo{metrics: v.Metrics, labels: v.Labels}
}

// check runs promcheck on expr and keeps the selectors and quantiles it
// found, for the coverage checks.
func (a *analysis) check(expr string, s promcheck.Schema, o promcheck.Options, report func(string)) promcheck.Result {
	r := promcheck.Check(expr, s, o, report)
	a.selectors = append(a.selectors, r.Selectors...)
	for q := range r.Quantiles {
		a.quantiles[q] = true
	}
	return r
}
