package promcheck

import (
	"strings"
	"testing"
)

var testSchema = Schema{
	"jobs_total":       {Kind: Counter, Labels: []string{"group", "result"}, Values: map[string][]string{"result": {"ok", "failed"}}},
	"queue_depth":      {Kind: Gauge, Labels: []string{"group", "queue"}},
	"job_time_seconds": {Kind: Histogram, Labels: []string{"group"}},
}

// check returns the problems Check reports for expr.
func check(expr string, o Options) ([]string, Result) {
	var problems []string
	r := Check(expr, testSchema, o, func(p string) { problems = append(problems, p) })
	return problems, r
}

// Sound expressions pass, and Check says what their result carries.
func TestCheckAcceptsSoundExpressions(t *testing.T) {
	t.Parallel()
	for expr, labels := range map[string]string{
		`sum by (result) (rate(jobs_total{group=~"$group"}[$__rate_interval]))`:                                                    "result",
		`histogram_quantile(0.99, sum by (le) (rate(job_time_seconds_bucket{group=~"$group"}[5m])))`:                               "none",
		`max without (queue) (queue_depth{group=~"$group"}) / on (group) group_left sum by (group) (queue_depth{group=~"$group"})`: "group",
		`label_replace(queue_depth{group=~"$group"}, "q", "$1", "queue", "(.*)")`:                                                  "group, q, queue",
		`increase(jobs_total{group=~"$group",result=~"ok|failed"}[1h])`:                                                            "group, result",
	} {
		problems, r := check(expr, Options{FilterLabel: "group"})
		if len(problems) > 0 || !r.Vector || r.LabelList != labels {
			t.Errorf("%s: problems %q, vector %v, labels %q (want %q)", expr, problems, r.Vector, r.LabelList, labels)
		}
	}
}

// Each mistake is reported, with words that say what is wrong.
func TestCheckReportsMistakes(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string]string{
		`sum(rate(other_total[5m]))`:            "other_total is not a metric of the schema",
		`jobs_total`:                            "jobs_total is a counter: wrap it in rate()",
		`rate(queue_depth[5m])`:                 "queue_depth is a gauge",
		`job_time_seconds`:                      "job_time_seconds is a histogram",
		`queue_depth_bucket`:                    "queue_depth is a gauge, not a histogram",
		`sum by (queue) (rate(jobs_total[5m]))`: `"queue" is not a label of`,
		`rate(jobs_total{result="done"}[5m])`:   `jobs_total has no result "done"`,
		`rate(jobs_total{nope="x"}[5m])`:        `"nope" is not a label of jobs_total`,
		`histogram_quantile(0.9, sum(rate(job_time_seconds_bucket[5m])))`: "needs the le label",
		`rate(jobs_total[5m]`: "syntax error",
		`queue_depth[5m]`:     "range vector",
	} {
		problems, _ := check(expr, Options{})
		if !strings.Contains(strings.Join(problems, "\n"), want) {
			t.Errorf("%s: want a problem containing %q, got %q", expr, want, problems)
		}
	}
}

// FilterLabel requires the dashboard variable's filter; Unknown words the
// problem of an unknown metric; Metadata accepts a raw selector.
func TestCheckOptions(t *testing.T) {
	t.Parallel()
	if problems, _ := check(`queue_depth`, Options{FilterLabel: "group"}); len(problems) != 1 || !strings.Contains(problems[0], `group=~"$group"`) {
		t.Errorf("unfiltered selector: %q", problems)
	}
	if problems, _ := check(`rate(x_total[5m])`, Options{Unknown: func(n string) string { return n + " is not ours" }}); len(problems) != 1 || problems[0] != "x_total is not ours" {
		t.Errorf("unknown metric: %q", problems)
	}
	if problems, _ := check(`jobs_total`, Options{Metadata: true}); len(problems) != 0 {
		t.Errorf("metadata query: %q", problems)
	}
	_, r := check(`histogram_quantile(0.5, sum by (le) (rate(job_time_seconds_bucket[5m])))`, Options{})
	if !r.Quantiles[Quantile{Phi: "0.5", Histogram: "job_time_seconds"}] || len(r.Selectors) != 1 || r.Selectors[0].Func != "rate" {
		t.Errorf("quantiles %v selectors %+v", r.Quantiles, r.Selectors)
	}
}
