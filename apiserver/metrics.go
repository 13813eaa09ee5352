package apiserver

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the API's Prometheus metrics.
type Metrics struct {
	submitted *prometheus.CounterVec
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// NewMetrics registers the API's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wes_runs_submitted_total", Help: "Runs accepted by POST /runs, by engine.",
		}, []string{"engine"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wes_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wes_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
	}
	reg.MustRegister(m.submitted, m.requests, m.latency)
	return m
}

// instrument counts requests by their route template (never the raw path,
// which would make one series per run).
func (m *Metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := "unmatched"
		if cr := mux.CurrentRoute(r); cr != nil {
			if tpl, err := cr.GetPathTemplate(); err == nil {
				route = tpl
			}
		}
		method := methodLabel(r.Method)
		m.requests.WithLabelValues(route, method, strconv.Itoa(rec.status)).Inc()
		m.latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
	})
}

// methodLabel is the method's label: a caller names any method it likes,
// and every label value is a series kept for ever.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return method
	}
	return "OTHER"
}

// backlogCollector reports the outbox backlog at scrape time.
type backlogCollector struct {
	store interface {
		OutboxBacklog(ctx context.Context) (int64, error)
	}
	desc *prometheus.Desc
}

// NewBacklogCollector returns a collector of the outbox backlog.
func NewBacklogCollector(store interface {
	OutboxBacklog(ctx context.Context) (int64, error)
}) prometheus.Collector {
	return &backlogCollector{store: store, desc: prometheus.NewDesc("wes_outbox_backlog", "Outbox messages not yet published.", nil, nil)}
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := c.store.OutboxBacklog(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}
