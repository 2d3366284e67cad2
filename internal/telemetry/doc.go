// Package telemetry holds what a worker tells the outside about its work:
// the Prometheus collectors (Metrics, and each partition's delivery Stats
// with their own lock, read by a scrape without locking any partition),
// OpenTelemetry tracing (Tracing), and the status page's Board with its
// own sample types, which package worker converts to its public Status
// types. Metric names, kinds and labels come from internal/metricdef.
package telemetry
