package control

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/avatargen/musetalk/protocol"
)

// metrics are the Server's own instruments, on a registry of its own (no
// global registry). Counts of jobs, attempts and workers are not kept
// here: they are read from the store at scrape time, so every replica
// reports the same, right numbers.
type metrics struct {
	reg                *prometheus.Registry
	httpRequests       *prometheus.CounterVec
	httpDuration       *prometheus.HistogramVec
	claimDuration      *prometheus.HistogramVec
	sweeps             *prometheus.CounterVec
	sweepInterruptions *prometheus.CounterVec
	sweepOffline       prometheus.Counter
}

func newMetrics() (*metrics, error) {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "musetalk_http_requests_total",
			Help: "HTTP requests served by this replica, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "musetalk_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request on this replica, by method and route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
		claimDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "musetalk_claim_duration_seconds",
			Help:    "Time spent in a worker's claim on this replica, by result (claimed, empty, drained, error).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "musetalk_sweeper_runs_total",
			Help: "Sweeper passes on this replica, by result (ok, error).",
		}, []string{"result"}),
		sweepInterruptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "musetalk_sweeper_interruptions_total",
			Help: "Running attempts this replica's sweeper interrupted, by reason (lease_expired, worker_offline, stalled, other).",
		}, []string{"reason"}),
		sweepOffline: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "musetalk_sweeper_workers_offline_total",
			Help: "Workers this replica's sweeper marked offline after missed heartbeats.",
		}),
	}
	for _, r := range []string{"lease_expired", "worker_offline", "stalled", "other"} {
		m.sweepInterruptions.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.sweeps.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{
		m.httpRequests, m.httpDuration, m.claimDuration, m.sweeps, m.sweepInterruptions, m.sweepOffline,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

// interruptionReason maps a store's free-text reason to a bounded label.
func interruptionReason(reason string) string {
	switch {
	case strings.HasPrefix(reason, "lease expired"):
		return "lease_expired"
	case strings.HasPrefix(reason, "worker offline"):
		return "worker_offline"
	case strings.HasPrefix(reason, "no progress"):
		return "stalled"
	}
	return "other"
}

var (
	jobsDesc = prometheus.NewDesc("musetalk_jobs",
		"Jobs in the store, by state (read from the store at scrape time).", []string{"state"}, nil)
	attemptsDesc = prometheus.NewDesc("musetalk_attempts",
		"Attempts in the store, by outcome (read from the store at scrape time).", []string{"outcome"}, nil)
	workersDesc = prometheus.NewDesc("musetalk_workers",
		"Workers in the registry, by status (read from the store at scrape time).", []string{"status"}, nil)
)

// storeCounts is one scrape's snapshot of the store's counts.
type storeCounts struct {
	jobs     map[protocol.JobState]int
	attempts map[protocol.AttemptOutcome]int
	workers  map[protocol.WorkerStatus]int
}

func (c *storeCounts) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- attemptsDesc
	ch <- workersDesc
}

func (c *storeCounts) Collect(ch chan<- prometheus.Metric) {
	for k, v := range c.jobs {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(v), string(k))
	}
	for k, v := range c.attempts {
		ch <- prometheus.MustNewConstMetric(attemptsDesc, prometheus.GaugeValue, float64(v), string(k))
	}
	for k, v := range c.workers {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(v), string(k))
	}
}

func (s *Server) readCounts(ctx context.Context) (*storeCounts, error) {
	var (
		c   storeCounts
		err error
	)
	if c.jobs, err = s.store.JobCountByState(ctx); err != nil {
		return nil, err
	}
	if c.attempts, err = s.store.AttemptCountByOutcome(ctx); err != nil {
		return nil, err
	}
	if c.workers, err = s.store.WorkerCountByStatus(ctx); err != nil {
		return nil, err
	}
	return &c, nil
}

// handleMetrics serves the Prometheus text format: this replica's own
// instruments plus the store's counts read now, with the request's context.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	counts, err := s.readCounts(r.Context())
	if err != nil {
		info(r.Context()).err = err
		return errorf(http.StatusServiceUnavailable, protocol.CodeUnavailable, "reading counts from the store failed")
	}
	scrape := prometheus.NewRegistry()
	if err := scrape.Register(counts); err != nil {
		return fmt.Errorf("registering store counts: %w", err)
	}
	promhttp.HandlerFor(prometheus.Gatherers{s.metrics.reg, scrape}, promhttp.HandlerOpts{
		ErrorLog: slogPromLogger{s}, ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(w, r)
	return nil
}

// slogPromLogger forwards promhttp's errors to the Server's logger.
type slogPromLogger struct{ s *Server }

func (l slogPromLogger) Println(v ...any) {
	l.s.log.Error("serving metrics", "error", fmt.Sprint(v...))
}
