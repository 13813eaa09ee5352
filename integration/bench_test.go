package integration

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkRunsEndToEnd submits b.N mock runs of zero duration over HTTP,
// from 16 concurrent clients, to `wes api` with two `wes executor` processes
// (8 slots each), and waits until the database says every run is COMPLETE.
// It reports end-to-end runs per second and the submit latency percentiles.
//
//	WES_TEST_DATABASE_URL=… WES_TEST_NATS_URL=… go test -run '^$' -bench RunsEndToEnd -benchtime 2000x ./integration/
func BenchmarkRunsEndToEnd(b *testing.B) {
	url, ns := natsURL(b)
	e := newEnv(b, url, ns)
	e.vars["WES_LOG_LEVEL"] = "warn"
	e.startAPI()
	for _, id := range []string{"bench-1", "bench-2"} {
		e.start(id, map[string]string{"WES_EXECUTOR_ID": id, "WES_EXECUTOR_SLOTS": "8"}, "executor")
	}
	e.waitEngine("mock")
	body, err := json.Marshal(map[string]any{
		"workflow_type": "CWL", "workflow_type_version": "v1.0", "workflow_url": "https://example.com/wf.cwl",
		"workflow_engine_parameters": map[string]string{"duration": "0s"},
	})
	require.NoError(b, err)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

	b.ResetTimer()
	start := time.Now()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	jobs := make(chan struct{})
	for range 16 {
		wg.Go(func() {
			for range jobs {
				t0 := time.Now()
				resp, err := client.Post(e.apiBase+"/runs", "application/json", bytes.NewReader(body))
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Errorf("submit: %v %v", err, resp)
					return
				}
				resp.Body.Close()
				mu.Lock()
				latencies = append(latencies, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	for range b.N {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	submitted := time.Since(start)
	for {
		var info struct {
			Counts map[string]int `json:"system_state_counts"`
		}
		e.getJSON("/service-info", &info)
		if info.Counts["COMPLETE"] >= b.N {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("only %d of %d runs complete after 10 minutes", info.Counts["COMPLETE"], b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "runs/s")
	b.ReportMetric(float64(b.N)/submitted.Seconds(), "submits/s")
	b.ReportMetric(pct(0.5), "submit-p50-ms")
	b.ReportMetric(pct(0.99), "submit-p99-ms")
}
