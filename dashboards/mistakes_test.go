package dashboards_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

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
