package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPHandler serves the worker's operational endpoints, for an application
// that mounts them on its own server (with WithHTTPServer(false)):
//
//   - /metrics: Prometheus metrics from the worker's registry;
//   - /healthz: 200 while the process runs and its background loops make
//     progress, 503 when one is wedged;
//   - /readyz: 200 once the worker has joined its group and while it can
//     reach the brokers, 503 otherwise.
func (w *Worker) HTTPHandler() http.Handler {
	gatherer := prometheus.DefaultGatherer
	if g, ok := w.registerer.(prometheus.Gatherer); ok {
		gatherer = g
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{w.log}}))
	mux.HandleFunc("/healthz", probeHandler(w.health.live, "ok", "a background loop is wedged"))
	mux.HandleFunc("/readyz", probeHandler(w.health.ready, "ready", "not in a group session or cannot reach the brokers"))
	w.mountStatus(mux) // /status and /status.json (status_http.go)
	return mux
}

func probeHandler(ok func() bool, good, bad string) http.HandlerFunc {
	return func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok() {
			fmt.Fprintln(rw, good)
			return
		}
		rw.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(rw, bad)
	}
}

// serveHTTP starts the endpoint server on METRICS_ADDR, if the worker runs
// one, and returns the function that stops it.
func (w *Worker) serveHTTP() (stop func(), err error) {
	if !w.httpServer || w.cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", w.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("kafkaworker: METRICS_ADDR %q: %w", w.cfg.MetricsAddr, err)
	}
	srv := &http.Server{Handler: w.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("metrics server stopped", slog.Any("error", err))
		}
	}()
	w.log.Info("serving /metrics, /healthz and /readyz", slog.String("addr", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// slogPrinter adapts a slog.Logger to promhttp's error logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Error("serving metrics", slog.String("error", fmt.Sprint(v...)))
}
