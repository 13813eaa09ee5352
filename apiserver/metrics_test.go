package apiserver

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Methods a caller makes up all count as OTHER: a label value each would
// be a series each, for ever.
func TestRequestMetricsBoundTheMethods(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	r := mux.NewRouter()
	r.Use(m.instrument)
	r.Handle("/runs", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	for _, method := range []string{"GET", "POST", "X0", "X1", "BREW"} {
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, "/runs", nil))
	}
	families, err := reg.Gather()
	require.NoError(t, err)
	counts := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "wes_http_requests_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "method" {
					counts[l.GetValue()] += metric.GetCounter().GetValue()
				}
			}
		}
	}
	require.Equal(t, map[string]float64{"GET": 1, "POST": 1, "OTHER": 3}, counts)
}
