package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
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

// TestBenchCommand runs `wes bench` and its scenarios against real
// processes, small, and checks that what they report adds up.
func TestBenchCommand(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["WES_LOG_LEVEL"] = "warn"
	e.startAPI()
	e.start("executor", map[string]string{"WES_EXECUTOR_SLOTS": "8"}, "executor")
	e.waitEngine("mock")
	client := map[string]string{"WES_API_URL": e.apiBase}
	wes := func(args ...string) []byte {
		out, err := e.command(client, append([]string{"bench"}, args...)...).Output()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("wes bench %v: %v\n%s%s", args, err, out, exit.Stderr)
		}
		require.NoError(t, err)
		return out
	}

	var sweep []map[string]any
	dec := json.NewDecoder(bytes.NewReader(wes("--concurrency", "1,4", "--runs", "30", "--json")))
	for dec.More() {
		var r map[string]any
		require.NoError(t, dec.Decode(&r))
		sweep = append(sweep, r)
	}
	require.Len(t, sweep, 2, "one result per concurrency")
	for i, r := range sweep {
		require.EqualValues(t, []int{1, 4}[i], r["concurrency"])
		require.EqualValues(t, 30, r["submitted"])
		require.EqualValues(t, 30, r["completed"], "every run seen COMPLETE: %v", r)
		require.EqualValues(t, 30, r["dispatched"], "every run seen INITIALIZING: %v", r)
		require.LessOrEqual(t, r["dispatched_before_answer"], r["dispatched"], "%v", r)
		require.EqualValues(t, 0, r["errors_total"], "%v", r)
		// Dispatch may be 0 ms for most runs: on an idle machine an
		// executor can report INITIALIZING before the submission's answer
		// reaches the client (dispatched_before_answer says how many).
		for _, k := range []string{"submit_per_sec", "submit_p50_ms", "submit_p99_ms", "e2e_per_sec", "e2e_p99_ms"} {
			require.Greater(t, r[k], 0.0, "%s in %v", k, r)
		}
		require.LessOrEqual(t, r["submit_p50_ms"], r["submit_p99_ms"])
		require.LessOrEqual(t, r["dispatch_p50_ms"], r["dispatch_p99_ms"])
		require.LessOrEqual(t, r["dispatch_max_ms"], r["e2e_max_ms"], "a run is dispatched before it completes")
	}

	// Submissions alone: answered, recorded, neither followed nor waited for.
	var alone map[string]any
	require.NoError(t, json.Unmarshal(wes("--submit-only", "--concurrency", "4", "--runs", "40", "--json"), &alone))
	require.Equal(t, true, alone["submit_only"], "%v", alone)
	require.EqualValues(t, 40, alone["submitted"], "%v", alone)
	require.EqualValues(t, 0, alone["errors_total"], "%v", alone)
	require.Greater(t, alone["submit_per_sec"], 0.0, "%v", alone)
	require.LessOrEqual(t, alone["submit_p50_ms"], alone["submit_p99_ms"], "%v", alone)
	require.EqualValues(t, 0, alone["dispatched"], "submit-only does not follow the runs: %v", alone)

	var ceil map[string]float64
	require.NoError(t, json.Unmarshal(wes("ceilings", "--concurrency", "2", "--duration", "500ms", "--json"), &ceil))
	for _, k := range []string{"pg_insert_per_sec", "js_publish_per_sec", "js_async_publish_per_sec"} {
		require.Greater(t, ceil[k], 0.0, "%s in %v", k, ceil)
	}

	wes("fill", "--runs", "3000")
	var list []map[string]any
	require.NoError(t, json.Unmarshal(wes("list", "--page-size", "100", "--pages", "3", "--first", "5", "--json"), &list))
	require.NotEmpty(t, list)
	for _, r := range list {
		require.Greater(t, r["requests"], 0.0, "%v", r)
		require.Greater(t, r["p50_ms"], 0.0, "%v", r)
	}
}
