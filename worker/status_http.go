package worker

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// statusAssets are the status page's template, style and script, embedded
// so the page needs no build step and no network.
//
//go:embed statuspage/status.html statuspage/status.css statuspage/status.js
var statusAssets embed.FS

// statusTemplate renders /status; its helpers format values the way
// statuspage/status.js does when it refreshes the page.
var statusTemplate = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"stamp":   stamp,
	"optTime": func(t *time.Time) string { return optTime(t) },
	"optInt":  optInt,
	"secs":    secs,
	"age":     func(s float64, off *int64) string { return ageText(s, off) },
	"rate":    rateText,
	"state":   stateHTML,
	"paused":  pausedText,
	"dest":    destText,
}).ParseFS(statusAssets, "statuspage/status.html"))

var (
	statusCSS = template.CSS(mustAsset("statuspage/status.css"))
	statusJS  = template.JS(mustAsset("statuspage/status.js"))
)

func mustAsset(name string) string {
	b, err := statusAssets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// mountStatus adds /status (the HTML page) and /status.json to mux.
func (w *Worker) mountStatus(mux *http.ServeMux) {
	mux.HandleFunc("/status", w.serveStatusPage)
	mux.HandleFunc("/status.json", w.serveStatusJSON)
}

func (w *Worker) serveStatusJSON(rw http.ResponseWriter, _ *http.Request) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(rw)
	enc.SetIndent("", "  ")
	_ = enc.Encode(w.Status())
}

func (w *Worker) serveStatusPage(rw http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	if err := renderStatus(&buf, w.Status()); err != nil {
		http.Error(rw, "rendering the status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	_, _ = rw.Write(buf.Bytes())
}

// renderStatus writes the status page for s.
func renderStatus(buf *bytes.Buffer, s Status) error {
	return statusTemplate.Execute(buf, struct {
		S     Status
		Chart chart
		CSS   template.CSS
		JS    template.JS
	}{s, chartOf(s), statusCSS, statusJS})
}

// chart is the throughput chart's geometry: one polyline per series.
type chart struct {
	Width, Height int
	Max           float64 // the largest handled rate, the top of the y axis
	Lines         []chartLine
}

type chartLine struct{ Name, Points string }

const chartWidth, chartHeight = 600, 120

// chartOf lays out the rates over the window ending at s.GeneratedAt, as
// chart() in status.js does.
func chartOf(s Status) chart {
	c := chart{Width: chartWidth, Height: chartHeight}
	rates := s.Throughput.Rates
	for _, p := range rates {
		c.Max = math.Max(c.Max, p.Handled)
	}
	win := float64(s.Throughput.WindowSeconds) * 1000
	series := []struct {
		name string
		pick func(RatePoint) float64
	}{
		{"handled", func(p RatePoint) float64 { return p.Handled }},
		{"success", func(p RatePoint) float64 { return p.Success }},
		{"retry", func(p RatePoint) float64 { return p.Retry }},
		{"dead_letter", func(p RatePoint) float64 { return p.DeadLetter }},
		{"error", func(p RatePoint) float64 { return p.Error }},
	}
	for _, sr := range series {
		pts := make([]string, 0, len(rates))
		for _, p := range rates {
			x := chartWidth - float64(s.GeneratedAt.Sub(p.Time).Milliseconds())/win*chartWidth
			y := float64(chartHeight - 2)
			if c.Max > 0 {
				y -= sr.pick(p) / c.Max * (chartHeight - 18)
			}
			pts = append(pts, strconv.FormatFloat(x, 'f', 1, 64)+","+strconv.FormatFloat(y, 'f', 1, 64))
		}
		c.Lines = append(c.Lines, chartLine{sr.name, strings.Join(pts, " ")})
	}
	return c
}

// stamp formats t to the second in UTC, or "—" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

func optTime(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return stamp(*t)
}

func optInt(v *int64) string {
	if v == nil {
		return "—"
	}
	return strconv.FormatInt(*v, 10)
}

// secs formats a duration in seconds compactly: 250ms, 4.2s, 3m7s, 2h5m.
func secs(s float64) string {
	switch {
	case s < 1:
		return fmt.Sprintf("%dms", int(math.Round(s*1000)))
	case s < 60:
		return strconv.FormatFloat(math.Round(s*10)/10, 'f', -1, 64) + "s"
	case s < 3600:
		return fmt.Sprintf("%dm%ds", int(s/60), int(math.Mod(s, 60)))
	}
	return fmt.Sprintf("%dh%dm", int(s/3600), int(math.Mod(s, 3600)/60))
}

func ageText(s float64, off *int64) string {
	if off == nil {
		return "—"
	}
	return secs(s)
}

func rateText(r float64) string {
	if r < 10 {
		return strconv.FormatFloat(math.Round(r*10)/10, 'f', -1, 64)
	}
	return strconv.FormatFloat(math.Round(r), 'f', -1, 64)
}

func stateHTML(ok bool, why string) template.HTML {
	if ok {
		return `<span class="badge ok">yes</span>`
	}
	return template.HTML(`<span class="badge bad">no</span> ` + template.HTMLEscapeString(why))
}

func pausedText(paused bool, blocked string) string {
	switch {
	case paused:
		return "paused"
	case blocked != "":
		return "intake held: " + blocked
	}
	return "no"
}

// destText says where a failed delivery went, for people.
func destText(f FailureStatus) string {
	switch f.Destination {
	case DestinationRetryTier:
		return fmt.Sprintf("retry tier %d (%s)", f.Tier, f.DestinationTopic)
	case DestinationDeadLetter:
		return "dead letter (" + f.DestinationTopic + ")"
	}
	return "retried in place"
}
