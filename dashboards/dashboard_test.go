package dashboards_test

// This test keeps kafkaworker.json in step with the metrics the worker
// really exports. The metric names, their kinds (counter, gauge, histogram)
// and their label names are not copied here: they are read from the
// collectors worker.New registers, and checked against worker.MetricNames.
// Every PromQL expression of the dashboard (panel targets, rows' nested
// panels, annotations, template variable queries) goes through a small
// PromQL parser that knows each metric's labels, so a renamed metric, a
// label the metric does not have, a counter graphed without rate(), or a
// histogram_quantile that lost its le label fails the test with the panel
// title and the expression.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkaworker/kafkaworker/handler"
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
	for _, name := range worker.MetricNames {
		if !a.usesMetric(name) {
			t.Errorf("%s: no panel queries %s (listed in worker.MetricNames): add one, so the dashboard shows every exported metric", dashboardFile, name)
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
			a.quantiles[quantileKey{"0.5", worker.MetricProcessingDuration}]},
		{"processing time p99: histogram_quantile(0.99, ... " + worker.MetricProcessingDuration + "_bucket ...)",
			a.quantiles[quantileKey{"0.99", worker.MetricProcessingDuration}]},
		{"processing delay p99: histogram_quantile(0.99, ... " + worker.MetricProcessingDelay + "_bucket ...)",
			a.quantiles[quantileKey{"0.99", worker.MetricProcessingDelay}]},
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
// from is the worker's own: what worker.New registers is exactly
// worker.MetricNames, and the two histograms are the two histograms.
func TestDashboardSchemaMatchesMetricNames(t *testing.T) {
	t.Parallel()
	s := workerSchema(t)
	var registered []string
	for name := range s {
		registered = append(registered, name)
	}
	want := slices.Clone(worker.MetricNames)
	sort.Strings(registered)
	sort.Strings(want)
	if !slices.Equal(registered, want) {
		t.Errorf("worker.New registers %v, but worker.MetricNames is %v", registered, want)
	}
	for _, name := range []string{worker.MetricProcessingDuration, worker.MetricProcessingDelay} {
		if s[name].kind != histogram {
			t.Errorf("%s is registered as a %s; the dashboard queries it as a histogram", name, s[name].kind)
		}
	}
}

// TestCheckerCatchesMistakes feeds the checker dashboards with one mistake
// each, so a checker that quietly stopped looking would fail here.
func TestCheckerCatchesMistakes(t *testing.T) {
	t.Parallel()
	s := workerSchema(t)

	t.Run("valid control", func(t *testing.T) {
		t.Parallel()
		good := `sum by (topic) (rate(kafkaworker_messages_processed_total{group=~"$group", topic=~"$topic", result="retry"}[$__rate_interval]))`
		if a := checkDashboard(miniDashboard(good), s); len(a.problems) != 0 {
			t.Fatalf("a correct dashboard was reported:\n%s", strings.Join(a.problems, "\n"))
		}
	})

	t.Run("nonexistent metric", func(t *testing.T) {
		t.Parallel()
		const snippet = `{
  "title": "broken", "uid": "broken", "schemaVersion": 39,
  "templating": {"list": [
    {"type": "datasource", "name": "DS_PROMETHEUS", "query": "prometheus"},
    {"type": "query", "name": "group", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "query": "label_values(kafkaworker_messages_consumed_total, group)"},
    {"type": "query", "name": "topic", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "query": "label_values(kafkaworker_messages_consumed_total{group=~\"$group\"}, topic)"}
  ]},
  "panels": [
    {"type": "timeseries", "id": 1, "title": "Made-up metric", "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
     "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "targets": [{"refId": "A", "expr": "sum(rate(kafkaworker_nonexistent_total{group=~\"$group\"}[5m]))"}]}
  ]
}`
		a := checkDashboard([]byte(snippet), s)
		want := `panel "Made-up metric", target A: kafkaworker_nonexistent_total is not a metric the worker exports`
		if !containsProblem(a.problems, want) || !containsProblem(a.problems, `expr: sum(rate(kafkaworker_nonexistent_total{group=~"$group"}[5m]))`) {
			t.Fatalf("the checker did not report the made-up metric with its panel and expression; want %q, got:\n%s",
				want, strings.Join(a.problems, "\n"))
		}
	})

	exprCases := []struct{ name, expr, want string }{
		{"renamed metric", `sum(rate(kafkaworker_messages_handled_total{group=~"$group"}[5m]))`,
			"kafkaworker_messages_handled_total is not a metric the worker exports"},
		{"bucket of a counter", `histogram_quantile(0.99, sum by (le) (rate(kafkaworker_messages_processed_total_bucket{group=~"$group"}[5m])))`,
			"kafkaworker_messages_processed_total is a counter, not a histogram: it has no _bucket series"},
		{"count of a gauge", `sum(rate(kafkaworker_consumer_lag_count{group=~"$group"}[5m]))`,
			"kafkaworker_consumer_lag is a gauge, not a histogram: it has no _count series"},
		{"bare histogram name", `sum(rate(kafkaworker_processing_duration_seconds{group=~"$group"}[5m]))`,
			"kafkaworker_processing_duration_seconds is a histogram: Prometheus stores it as"},
		{"by a label the metric lacks", `sum by (partition) (rate(kafkaworker_messages_processed_total{group=~"$group"}[5m]))`,
			`by (partition): "partition" is not a label of kafkaworker_messages_processed_total`},
		{"matcher on a label the metric lacks", `sum(rate(kafkaworker_messages_consumed_total{group=~"$group", instance="a"}[5m]))`,
			`"instance" is not a label of kafkaworker_messages_consumed_total`},
		{"topic on a group-only gauge", `sum by (topic) (kafkaworker_in_flight_messages{group=~"$group"})`,
			`"topic" is not a label of kafkaworker_in_flight_messages`},
		{"misspelt result", `sum(rate(kafkaworker_messages_processed_total{group=~"$group", result="dead-letter"}[5m]))`,
			`result="dead-letter": kafkaworker_messages_processed_total has no result "dead-letter"`},
		{"misspelt result in a regex", `sum(rate(kafkaworker_messages_processed_total{group=~"$group", result=~"retry|deadletter"}[5m]))`,
			`has no result "deadletter"`},
		{"commit result the worker never sets", `sum(rate(kafkaworker_commits_total{group=~"$group", result="retry"}[5m]))`,
			`kafkaworker_commits_total has no result "retry"`},
		{"counter without rate", `sum by (topic) (kafkaworker_messages_consumed_total{group=~"$group"})`,
			"kafkaworker_messages_consumed_total is a counter: wrap it in rate() or increase()"},
		{"rate of a gauge", `sum(rate(kafkaworker_consumer_lag{group=~"$group"}[5m]))`,
			"kafkaworker_consumer_lag is a gauge: rate() of a gauge means nothing"},
		{"quantile without le", `histogram_quantile(0.99, sum by (topic) (rate(kafkaworker_processing_duration_seconds_bucket{group=~"$group"}[5m])))`,
			"histogram_quantile needs the le label"},
		{"bucket outside a quantile", `sum(rate(kafkaworker_processing_delay_seconds_bucket{group=~"$group"}[5m]))`,
			"use it inside histogram_quantile()"},
		{"sides that cannot match", `sum by (topic) (rate(kafkaworker_messages_consumed_total{group=~"$group"}[5m])) / sum by (result) (rate(kafkaworker_messages_processed_total{group=~"$group"}[5m]))`,
			"no series can match"},
		{"no group filter", `sum(rate(kafkaworker_messages_consumed_total[5m]))`,
			`filter it with group=~"$group"`},
		{"undefined variable", `sum(rate(kafkaworker_messages_consumed_total{group=~"$group", topic=~"$topc"}[5m]))`,
			`$topc is not a template variable`},
		{"unknown function", `sum(rates(kafkaworker_messages_consumed_total{group=~"$group"}[5m]))`,
			"unknown function rates()"},
		{"syntax error", `sum(rate(kafkaworker_messages_consumed_total{group=~"$group"}[5m])`,
			"syntax error"},
		{"range vector where a vector belongs", `sum(kafkaworker_in_flight_messages{group=~"$group"}[5m])`,
			"range vector"},
		{"metric from elsewhere", `sum(rate(http_requests_total[5m]))`,
			"http_requests_total is not a metric the worker exports"},
		{"metric name in a string", `label_replace(vector(1), "x", "kafkaworker_gone_total", "", "")`,
			"kafkaworker_gone_total is not a metric the worker exports"},
	}
	for _, c := range exprCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := checkDashboard(miniDashboard(c.expr), s)
			if !containsProblem(a.problems, c.want) || !containsProblem(a.problems, `panel "Only panel"`) {
				t.Fatalf("expr %s: want a problem naming the panel and containing %q, got:\n%s", c.expr, c.want, strings.Join(a.problems, "\n"))
			}
		})
	}

	good := `sum(rate(kafkaworker_messages_consumed_total{group=~"$group"}[5m]))`
	bad := `sum(rate(kafkaworker_nonexistent_total{group=~"$group"}[5m]))`
	docCases := []struct {
		name, want string
		edit       func(d map[string]any)
	}{
		{"nested in a collapsed row", `panel "Hidden" (row "Collapsed"), target A: kafkaworker_nonexistent_total`, func(d map[string]any) {
			d["panels"] = append(d["panels"].([]any), map[string]any{
				"type": "row", "id": 10, "title": "Collapsed", "collapsed": true, "gridPos": map[string]any{"h": 1, "w": 24, "x": 0, "y": 9},
				"panels": []any{panel(11, "Hidden", bad)},
			})
		}},
		{"template variable query", `variable "topic": kafkaworker_nonexistent_total is not a metric`, func(d map[string]any) {
			vars := d["templating"].(map[string]any)["list"].([]any)
			vars[2].(map[string]any)["query"] = map[string]any{"query": "label_values(kafkaworker_nonexistent_total, topic)", "refId": "A"}
		}},
		{"template variable label", `variable "group": label_values(..., partition): "partition" is not a label of kafkaworker_messages_consumed_total`, func(d map[string]any) {
			vars := d["templating"].(map[string]any)["list"].([]any)
			vars[1].(map[string]any)["query"] = "label_values(kafkaworker_messages_consumed_total, partition)"
		}},
		{"annotation", `annotation "Deploys": kafkaworker_nonexistent_total`, func(d map[string]any) {
			d["annotations"] = map[string]any{"list": []any{map[string]any{"name": "Deploys", "expr": bad,
				"datasource": map[string]any{"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}}}
		}},
		{"expr where the walk does not look", `expr at libraryPanels[0].model.targets[0].expr is not checked`, func(d map[string]any) {
			d["libraryPanels"] = []any{map[string]any{"model": map[string]any{"targets": []any{map[string]any{"expr": bad}}}}}
		}},
		{"hard-wired data source", `panel "Only panel": datasource must be {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}`, func(d map[string]any) {
			d["panels"].([]any)[0].(map[string]any)["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		}},
		{"no DS_PROMETHEUS variable", `no datasource variable DS_PROMETHEUS`, func(d map[string]any) {
			vars := d["templating"].(map[string]any)["list"].([]any)
			d["templating"].(map[string]any)["list"] = vars[1:]
		}},
		{"duplicate panel id", `panel "Second": id 1 is used twice`, func(d map[string]any) {
			d["panels"] = append(d["panels"].([]any), panel(1, "Second", good))
		}},
		{"duplicate panel title", `panel "Only panel": two panels have this title`, func(d map[string]any) {
			d["panels"] = append(d["panels"].([]any), panel(2, "Only panel", good))
		}},
	}
	for _, c := range docCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var d map[string]any
			if err := json.Unmarshal(miniDashboard(good), &d); err != nil {
				t.Fatal(err)
			}
			c.edit(d)
			raw, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if a := checkDashboard(raw, s); !containsProblem(a.problems, c.want) {
				t.Fatalf("want a problem containing %q, got:\n%s", c.want, strings.Join(a.problems, "\n"))
			}
		})
	}

	t.Run("not JSON", func(t *testing.T) {
		t.Parallel()
		if a := checkDashboard([]byte(`{"panels": [`), s); !containsProblem(a.problems, "not valid JSON") {
			t.Fatalf("want a JSON error, got %q", a.problems)
		}
	})
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

func containsProblem(problems []string, sub string) bool {
	return slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, sub) })
}

func panel(id int, title, expr string) map[string]any {
	return map[string]any{
		"type": "timeseries", "id": id, "title": title,
		"gridPos":    map[string]any{"h": 8, "w": 12, "x": 0, "y": 0},
		"datasource": map[string]any{"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
		"targets":    []any{map[string]any{"refId": "A", "expr": expr}},
	}
}

// miniDashboard is a correct dashboard but for expr, the query of its only
// panel, "Only panel".
func miniDashboard(expr string) []byte {
	ds := map[string]any{"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
	d := map[string]any{
		"title": "mini", "uid": "mini", "schemaVersion": 39,
		"templating": map[string]any{"list": []any{
			map[string]any{"type": "datasource", "name": "DS_PROMETHEUS", "query": "prometheus"},
			map[string]any{"type": "query", "name": "group", "datasource": ds,
				"query": "label_values(kafkaworker_messages_consumed_total, group)"},
			map[string]any{"type": "query", "name": "topic", "datasource": ds,
				"query": `label_values(kafkaworker_messages_consumed_total{group=~"$group"}, topic)`},
		}},
		"panels": []any{panel(1, "Only panel", expr)},
	}
	raw, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return raw
}

// ---------------------------------------------------------------------------
// The worker's metrics, as registered by worker.New.

type metricKind string

const (
	counter   metricKind = "counter"
	gauge     metricKind = "gauge"
	histogram metricKind = "histogram"
)

type metricDef struct {
	kind   metricKind
	labels map[string]bool
}

type schema map[string]metricDef

// resultValues are the values of the result label (worker/metrics.go: every
// delivery gets one of four; a commit succeeds or fails). They are not
// exported, so they are repeated here; a value the worker does not set
// would leave a panel empty.
var resultValues = map[string][]string{
	worker.MetricMessagesProcessed:  {"success", "error", "retry", "dead_letter"},
	worker.MetricProcessingDuration: {"success", "error", "retry", "dead_letter"},
	worker.MetricCommits:            {"success", "error"},
}

// captureRegisterer records the collectors registered with it.
type captureRegisterer struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (c *captureRegisterer) Register(col prometheus.Collector) error {
	c.collectors = append(c.collectors, col)
	return c.Registry.Register(col)
}

func (c *captureRegisterer) MustRegister(cols ...prometheus.Collector) {
	for _, col := range cols {
		if err := c.Register(col); err != nil {
			panic(err)
		}
	}
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]*)"`)
	descConst  = regexp.MustCompile(`constLabels: \{([^}]*)\}`)
	descVar    = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	constLabel = regexp.MustCompile(`(\w+)=`)
)

// workerSchema builds a Worker (New does not connect to Kafka) on a fresh
// registry and reads each collector's name, kind and label names.
func workerSchema(t *testing.T) schema {
	t.Helper()
	cfg := worker.DefaultConfig()
	cfg.Brokers = []string{"localhost:9092"}
	cfg.GroupID = "dashboard-test"
	cfg.Topics = []string{"orders"}
	reg := &captureRegisterer{Registry: prometheus.NewRegistry()}
	noop := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	if _, err := worker.New(cfg, noop, worker.WithRegisterer(reg), worker.WithHTTPServer(false)); err != nil {
		t.Fatalf("worker.New, to read the metrics it registers: %v", err)
	}
	s := schema{}
	for _, col := range reg.collectors {
		var kind metricKind
		switch col.(type) {
		case *prometheus.CounterVec:
			kind = counter
		case *prometheus.GaugeVec:
			kind = gauge
		case *prometheus.HistogramVec:
			kind = histogram
		default:
			kind = "custom" // a custom collector: each metric's kind follows from its name
		}
		descs := make(chan *prometheus.Desc, 16)
		col.Describe(descs)
		close(descs)
		for d := range descs {
			str := d.String()
			name, vars := descName.FindStringSubmatch(str), descVar.FindStringSubmatch(str)
			if name == nil || vars == nil {
				t.Fatalf("cannot read the name and labels from %s", str)
			}
			k := kind
			if k == "custom" {
				switch {
				case strings.HasSuffix(name[1], "_seconds"):
					k = histogram
				case strings.HasSuffix(name[1], "_total"):
					k = counter
				default:
					t.Fatalf("custom collector %T exports %s, whose kind its name does not tell: teach workerSchema", col, name[1])
				}
			}
			def := metricDef{kind: k, labels: map[string]bool{}}
			for _, l := range strings.Split(vars[1], ",") {
				if l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "c("), ")"); l != "" {
					def.labels[l] = true
				}
			}
			if c := descConst.FindStringSubmatch(str); c != nil {
				for _, m := range constLabel.FindAllStringSubmatch(c[1], -1) {
					def.labels[m[1]] = true
				}
			}
			s[name[1]] = def
		}
	}
	if len(s) == 0 {
		t.Fatal("worker.New registered no metrics")
	}
	return s
}

// resolve maps a series name to its metric: the name itself, or for a
// histogram its _bucket, _sum and _count series.
func (s schema) resolve(name string) (base, suffix string, def metricDef, problem string) {
	if def, ok := s[name]; ok {
		return name, "", def, ""
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		b, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		if def, ok := s[b]; ok {
			if def.kind != histogram {
				return b, suf, def, fmt.Sprintf("%s is a %s, not a histogram: it has no %s series", b, def.kind, suf)
			}
			return b, suf, def, ""
		}
	}
	return name, "", metricDef{}, unknownMetric(name)
}

func unknownMetric(name string) string {
	return fmt.Sprintf("%s is not a metric the worker exports (worker.MetricNames)", name)
}

// ---------------------------------------------------------------------------
// Walking the dashboard.

type targetInfo struct {
	panelType string
	metrics   map[string]bool // base names of the worker metrics used
	labels    map[string]bool // labels of the expression's result
}

type selectorUse struct {
	base     string
	fn       string // the rate/increase/... directly around it, if any
	matchers []matcher
}

type quantileKey struct{ phi, histogram string }

type analysis struct {
	problems  []string
	exprs     int
	targets   []targetInfo
	selectors []selectorUse
	quantiles map[quantileKey]bool
}

func (a *analysis) usesMetric(name string) bool {
	return slices.ContainsFunc(a.selectors, func(s selectorUse) bool { return s.base == name })
}

// usesSelector: some selector of metric, directly inside fn (any if ""),
// with label="value" (any if "").
func (a *analysis) usesSelector(metric, fn, label, value string) bool {
	return slices.ContainsFunc(a.selectors, func(s selectorUse) bool {
		if s.base != metric || (fn != "" && s.fn != fn) {
			return false
		}
		return label == "" || slices.ContainsFunc(s.matchers, func(m matcher) bool {
			return m.label == label && m.op == "=" && m.value == value
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

var varRef = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

var metricLike = regexp.MustCompile(`kafkaworker_[a-z_]+`)

// plainAlternatives is a regex matcher that is only a|b|c.
var plainAlternatives = regexp.MustCompile(`^[a-z_|]+$`)

// checkDashboard checks a dashboard against s and returns what it found.
// Each problem names where it is (panel title, target) and the expression.
func checkDashboard(raw []byte, s schema) *analysis {
	a := &analysis{quantiles: map[quantileKey]bool{}}
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

func (a *analysis) checkVariableQuery(where, q string, s schema, vars map[string]bool) {
	report := a.reporter(where, "query", q)
	a.checkVarRefs(q, vars, report)
	a.checkNames(q, s, report)
	if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
		if m[1] == "" {
			return // label_values(label): any metric
		}
		c := &exprChecker{schema: s, metadata: true, report: report, a: a}
		v := c.parseAndEval(m[1])
		if !v.any && v.kind == vVector && !v.labels[m[2]] {
			report(fmt.Sprintf("label_values(..., %s): %q is not a label of %s (its labels: %s)", m[2], m[2], v.names(), v.labelList()))
		}
		return
	}
	if m := otherVarQuery.FindStringSubmatch(q); m != nil {
		if m[2] != "" {
			c := &exprChecker{schema: s, report: report, a: a}
			c.parseAndEval(m[2])
		}
		return
	}
	report("not a Prometheus variable query: use label_values(metric{...}, label)")
}

func (a *analysis) checkVarRefs(expr string, vars map[string]bool, report func(string)) {
	for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
		name := m[1] + m[2] + m[3]
		if !vars[name] && !builtinVars[name] {
			report(fmt.Sprintf("$%s is not a template variable of the dashboard", name))
		}
	}
}

// checkNames finds every kafkaworker_ name in the text, strings included.
func (a *analysis) checkNames(expr string, s schema, report func(string)) {
	for _, name := range metricLike.FindAllString(expr, -1) {
		if _, _, _, p := s.resolve(name); p != "" {
			report(p)
		}
	}
}

// checkExpr checks one PromQL expression and returns what its result is.
func (a *analysis) checkExpr(where, expr string, s schema, vars map[string]bool) targetInfo {
	a.exprs++
	report := a.reporter(where, "expr", expr)
	a.checkVarRefs(expr, vars, report)
	a.checkNames(expr, s, report)
	c := &exprChecker{schema: s, report: report, a: a}
	v := c.parseAndEval(expr)
	return targetInfo{metrics: c.metrics, labels: v.labels}
}

// ---------------------------------------------------------------------------
// A PromQL parser, enough for dashboards: selectors, functions, aggregations,
// binary operators with vector matching, ranges and subqueries.

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tNumber // numbers, durations, and Grafana variables standing for them
	tString
	tRange // the inside of [...]
	tPunct
)

type token struct {
	kind tokKind
	text string
	pos  int
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') || c == ':' }

func lex(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			toks = append(toks, token{tIdent, s[i:j], i})
			i = j
		case (c >= '0' && c <= '9') || c == '.':
			j := i + 1
			for j < len(s) && (isIdentChar(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{tNumber, s[i:j], i})
			i = j
		case c == '$':
			m := varRef.FindStringIndex(s[i:])
			if m == nil || m[0] != 0 {
				return nil, fmt.Errorf("stray $ at %d", i)
			}
			toks = append(toks, token{tNumber, s[i : i+m[1]], i})
			i += m[1]
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, token{tString, s[i+1 : j], i})
			i = j + 1
		case c == '[':
			k := strings.IndexByte(s[i:], ']')
			if k < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			toks = append(toks, token{tRange, strings.TrimSpace(s[i+1 : i+k]), i})
			i += k + 1
		default:
			if i+1 < len(s) {
				switch two := s[i : i+2]; two {
				case "=~", "!~", "!=", "==", ">=", "<=":
					toks = append(toks, token{tPunct, two, i})
					i += 2
					continue
				}
			}
			if !strings.ContainsRune("(){},=+-*/%^<>@", rune(c)) {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			toks = append(toks, token{tPunct, string(c), i})
			i++
		}
	}
	return append(toks, token{kind: tEOF, pos: len(s)}), nil
}

type node any

type (
	numberLit struct{ text string }
	stringLit struct{ text string }
	matcher   struct{ label, op, value string }
	selector  struct {
		name     string
		matchers []matcher
		rng      string
	}
	call struct {
		fn   string
		args []node
	}
	aggregation struct {
		op                   string
		grouping             []string
		without, hasGrouping bool
		param, expr          node
	}
	binary struct {
		op, card          string // card: "", group_left, group_right
		lhs, rhs          node
		on, hasMatching   bool
		matching, include []string
	}
	unary    struct{ expr node }
	paren    struct{ expr node }
	subquery struct {
		expr node
		rng  string
	}
)

var aggregators = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "group": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true,
}

var binaryPrec = map[string]int{
	"or": 1, "and": 2, "unless": 2,
	"==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
	"+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6,
}

var rangeSyntax = regexp.MustCompile(`^(?:(?:\d+(?:ms|s|m|h|d|w|y))+|\$\{?\w+\}?)?$`)

type parser struct {
	toks []token
	i    int
}

type syntaxError struct{ msg string }

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) fail(format string, args ...any) {
	panic(syntaxError{fmt.Sprintf(format, args...)})
}

func (p *parser) is(text string) bool {
	t := p.peek()
	return (t.kind == tPunct || t.kind == tIdent) && t.text == text
}

func (p *parser) expect(text string) {
	if t := p.next(); t.text != text || (t.kind != tPunct && t.kind != tIdent) {
		p.fail("want %q at %d, got %q", text, t.pos, t.text)
	}
}

func parse(src string) (n node, err error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	defer func() {
		if r := recover(); r != nil {
			se, ok := r.(syntaxError)
			if !ok {
				panic(r)
			}
			n, err = nil, fmt.Errorf("%s", se.msg)
		}
	}()
	n = p.binaryExpr(1)
	if t := p.peek(); t.kind != tEOF {
		p.fail("unexpected %q at %d", t.text, t.pos)
	}
	return n, nil
}

func (p *parser) binaryExpr(minPrec int) node {
	lhs := p.unaryExpr()
	for {
		t := p.peek()
		prec, ok := binaryPrec[t.text]
		if !ok || (t.kind != tPunct && t.kind != tIdent) || prec < minPrec {
			return lhs
		}
		p.next()
		b := &binary{op: t.text}
		if p.is("bool") {
			p.next()
		}
		if p.is("on") || p.is("ignoring") {
			b.on, b.hasMatching = p.next().text == "on", true
			b.matching = p.labelList()
		}
		if p.is("group_left") || p.is("group_right") {
			b.card = p.next().text
			if p.is("(") {
				b.include = p.labelList()
			}
		}
		nextMin := prec + 1
		if t.text == "^" {
			nextMin = prec // right-associative
		}
		b.lhs, b.rhs = lhs, p.binaryExpr(nextMin)
		lhs = b
	}
}

func (p *parser) unaryExpr() node {
	if p.is("-") || p.is("+") {
		p.next()
		return &unary{p.unaryExpr()}
	}
	return p.postfix(p.primary())
}

func (p *parser) postfix(n node) node {
	for {
		switch t := p.peek(); {
		case t.kind == tRange:
			p.next()
			parts := strings.SplitN(t.text, ":", 2)
			if !rangeSyntax.MatchString(parts[0]) || parts[0] == "" || (len(parts) == 2 && !rangeSyntax.MatchString(parts[1])) {
				p.fail("bad range [%s] at %d", t.text, t.pos)
			}
			if sel, ok := n.(*selector); ok && sel.rng == "" && len(parts) == 1 {
				sel.rng = t.text
			} else if len(parts) == 2 {
				n = &subquery{n, t.text}
			} else {
				p.fail("a range [%s] at %d can follow only a selector; a subquery needs [range:step]", t.text, t.pos)
			}
		case t.kind == tIdent && t.text == "offset":
			p.next()
			if d := p.next(); d.kind != tNumber {
				p.fail("want a duration after offset at %d", d.pos)
			}
		case t.kind == tPunct && t.text == "@":
			p.next()
			p.primary()
		default:
			return n
		}
	}
}

func (p *parser) primary() node {
	t := p.next()
	switch t.kind {
	case tNumber:
		return &numberLit{t.text}
	case tString:
		return &stringLit{t.text}
	case tPunct:
		switch t.text {
		case "(":
			n := p.binaryExpr(1)
			p.expect(")")
			return &paren{n}
		case "{":
			return &selector{matchers: p.matchers()}
		}
	case tIdent:
		switch {
		case strings.EqualFold(t.text, "inf") || strings.EqualFold(t.text, "nan"):
			return &numberLit{t.text}
		case aggregators[t.text] && (p.is("(") || p.is("by") || p.is("without")):
			return p.aggregation(t.text)
		case p.is("("):
			p.next()
			c := &call{fn: t.text}
			for !p.is(")") {
				c.args = append(c.args, p.binaryExpr(1))
				if !p.is(")") {
					p.expect(",")
				}
			}
			p.next()
			return c
		default:
			sel := &selector{name: t.text}
			if p.is("{") {
				p.next()
				sel.matchers = p.matchers()
			}
			return sel
		}
	}
	p.fail("unexpected %q at %d", t.text, t.pos)
	return nil
}

func (p *parser) aggregation(op string) node {
	a := &aggregation{op: op}
	grouping := func() {
		if p.is("by") || p.is("without") {
			a.without, a.hasGrouping = p.next().text == "without", true
			a.grouping = p.labelList()
		}
	}
	grouping()
	p.expect("(")
	first := p.binaryExpr(1)
	if p.is(",") {
		p.next()
		a.param, a.expr = first, p.binaryExpr(1)
	} else {
		a.expr = first
	}
	p.expect(")")
	if !a.hasGrouping {
		grouping()
	}
	return a
}

func (p *parser) labelList() []string {
	p.expect("(")
	var labels []string
	for !p.is(")") {
		t := p.next()
		if t.kind != tIdent {
			p.fail("want a label name at %d, got %q", t.pos, t.text)
		}
		labels = append(labels, t.text)
		if !p.is(")") {
			p.expect(",")
		}
	}
	p.next()
	return labels
}

// matchers reads label matchers up to the closing brace; the opening brace
// has been read.
func (p *parser) matchers() []matcher {
	var ms []matcher
	for !p.is("}") {
		l := p.next()
		if l.kind != tIdent {
			p.fail("want a label name at %d, got %q", l.pos, l.text)
		}
		op := p.next()
		if op.kind != tPunct || (op.text != "=" && op.text != "!=" && op.text != "=~" && op.text != "!~") {
			p.fail("want a matcher operator at %d, got %q", op.pos, op.text)
		}
		v := p.next()
		if v.kind != tString {
			p.fail("want a quoted value at %d, got %q", v.pos, v.text)
		}
		ms = append(ms, matcher{l.text, op.text, v.text})
		if !p.is("}") {
			p.expect(",")
		}
	}
	p.next()
	return ms
}

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
	schema   schema
	metadata bool // a variable query: raw series are fine, no group filter
	report   func(string)
	a        *analysis
	metrics  map[string]bool
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
	base, suffix, def, problem := c.schema.resolve(s.name)
	if c.metrics == nil {
		c.metrics = map[string]bool{}
	}
	c.metrics[base] = true
	c.a.selectors = append(c.a.selectors, selectorUse{base: base, fn: fn, matchers: s.matchers})
	v := value{kind: vVector, metrics: []string{s.name}}
	if s.rng != "" {
		v.kind = vMatrix
	}
	if problem != "" {
		c.report(problem)
		v.any = true
		return v
	}
	if def.kind == histogram && suffix == "" {
		c.report(fmt.Sprintf("%s is a histogram: Prometheus stores it as %s_bucket, %s_sum and %s_count, not under its own name", base, base, base, base))
		v.any = true
		return v
	}
	v.labels = map[string]bool{}
	for l := range def.labels {
		v.labels[l] = true
	}
	if suffix == "_bucket" {
		v.labels["le"] = true
	}
	hasLe, groupFiltered := false, false
	for _, m := range s.matchers {
		if !v.labels[m.label] {
			c.report(fmt.Sprintf("%s{%s%s%q}: %q is not a label of %s (its labels: %s)", s.name, m.label, m.op, m.value, m.label, s.name, v.labelList()))
			continue
		}
		hasLe = hasLe || (m.label == "le" && m.op == "=")
		groupFiltered = groupFiltered || (m.label == "group" && m.op == "=~" && strings.Trim(m.value, "${}") == "group")
		if allowed, ok := resultValues[base]; ok && m.label == "result" && !strings.Contains(m.value, "$") {
			values := []string{m.value}
			if m.op == "=~" || m.op == "!~" {
				if !plainAlternatives.MatchString(m.value) {
					continue // a real regex: cannot tell
				}
				values = strings.Split(m.value, "|")
			}
			for _, val := range values {
				if !slices.Contains(allowed, val) {
					c.report(fmt.Sprintf("result%s%q: %s has no result %q (it has: %s)", m.op, m.value, base, val, strings.Join(allowed, ", ")))
				}
			}
		}
	}
	if c.metadata {
		return v
	}
	if v.labels["group"] && !groupFiltered {
		c.report(fmt.Sprintf(`%s: filter it with group=~"$group", so the group variable applies`, s.name))
	}
	isCounter := def.kind == counter || suffix != ""
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
					c.a.quantiles[quantileKey{phi.text, base}] = true
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
