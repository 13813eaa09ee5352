package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Runs submitted over HTTP (JSON and multipart) all reach their terminal
// state on two executors, which share the work; the API answers what the
// specification asks.
func TestRunsReachTerminalState(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.startAPI()
	metricsPort := freePort(t)
	e.start("executor-1", map[string]string{"WES_EXECUTOR_ID": "exec-1", "WES_EXECUTOR_SLOTS": "2",
		"WES_EXECUTOR_METRICS_ADDR": "127.0.0.1:" + itoa(metricsPort)}, "executor")
	e.start("executor-2", map[string]string{"WES_EXECUTOR_ID": "exec-2", "WES_EXECUTOR_SLOTS": "2"}, "executor")
	e.waitEngine("mock")

	type want struct {
		state    string
		exitCode int
	}
	runs := map[string]want{}
	for i := range 6 {
		runs[e.submit(map[string]string{"duration": "1500ms"}, map[string]string{"batch": "ok", "i": string(rune('a' + i))})] = want{"COMPLETE", 0}
	}
	runs[e.submit(map[string]string{"outcome": "EXECUTOR_ERROR", "exit_code": "3", "duration": "100ms"}, map[string]string{"batch": "bad"})] = want{"EXECUTOR_ERROR", 3}
	sysErr := e.submit(map[string]string{"outcome": "SYSTEM_ERROR", "duration": "100ms"}, nil)

	// The specification's multipart form, with an attachment in a sub-directory.
	status, body := e.submitMultipart(map[string]string{
		"workflow_type": "cwl", "workflow_type_version": "v1.2", "workflow_url": "tools/wf.cwl#main",
		"workflow_params":            `{"in": {"class": "File", "location": "data/in.txt"}}`,
		"workflow_engine_parameters": `{"duration": "200ms"}`,
		"tags":                       `{"batch": "multipart"}`,
	}, map[string]string{"tools/wf.cwl": "cwlVersion: v1.2\n", "data/in.txt": "hello\n"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	mpID := strings.Split(string(body), `"`)[3]
	runs[mpID] = want{"COMPLETE", 0}

	order := map[string]int{"QUEUED": 0, "INITIALIZING": 1, "RUNNING": 2, "COMPLETE": 3, "EXECUTOR_ERROR": 3}
	sawRunning := false
	for id, w := range runs {
		st, seen := e.waitState(id, 60*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
		require.Equal(t, w.state, st, "run %s: states %v", id, seen)
		for i := 1; i < len(seen); i++ {
			require.Less(t, order[seen[i-1]], order[seen[i]], "states out of order: %v", seen)
		}
		sawRunning = sawRunning || len(seen) > 1
		rl := e.run(id)
		require.NotNil(t, rl.RunLog.ExitCode, "exit_code is filled once the engine exited")
		require.Equal(t, w.exitCode, *rl.RunLog.ExitCode)
		require.NotEmpty(t, rl.RunLog.Cmd)
		require.NotEmpty(t, rl.RunLog.StartTime)
		require.NotEmpty(t, rl.RunLog.EndTime)
		require.True(t, strings.HasPrefix(rl.RunLog.Stdout, "http://"), "stdout is an absolute URL: %q", rl.RunLog.Stdout)
		require.NotNil(t, rl.Outputs, "outputs is an object, never null")
		resp, err := http.Get(rl.RunLog.Stdout)
		require.NoError(t, err)
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(out), "mock: running")
	}
	require.True(t, sawRunning, "no run was ever seen before its end state")

	st, _ := e.waitState(sysErr, 30*time.Second, "SYSTEM_ERROR", "COMPLETE")
	require.Equal(t, "SYSTEM_ERROR", st)
	rl := e.run(sysErr)
	require.Contains(t, strings.Join(rl.RunLog.SystemLogs, "\n"), "simulated system error", "a SYSTEM_ERROR says why")

	// Both executors took work.
	used := map[string]bool{}
	for id := range runs {
		for _, l := range e.run(id).RunLog.SystemLogs {
			for _, ex := range []string{"exec-1", "exec-2"} {
				if strings.Contains(l, "executor "+ex) {
					used[ex] = true
				}
			}
		}
	}
	require.Len(t, used, 2, "work was not shared between the executors: %v", used)

	// The attachment reached the run; its #fragment was kept.
	require.Equal(t, "tools/wf.cwl#main", e.run(mpID).Request.WorkflowURL)
	// run_log names the workflow (the spec's Log.name); system_logs the
	// engine that ran it and its version.
	require.Equal(t, "wf.cwl#main", e.run(mpID).RunLog.Name)
	require.Regexp(t, `attempt 1 on executor exec-\d, with mock \S+`, strings.Join(e.run(mpID).RunLog.SystemLogs, "\n"))

	// Tasks, with pagination.
	var tasks struct {
		TaskLogs []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"task_logs"`
		NextPageToken string `json:"next_page_token"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/runs/"+mpID+"/tasks?page_size=1", &tasks))
	require.Len(t, tasks.TaskLogs, 1)
	require.Equal(t, http.StatusOK, e.getJSON("/runs/"+mpID+"/tasks/"+tasks.TaskLogs[0].ID, nil))
	require.Equal(t, http.StatusNotFound, e.getJSON("/runs/"+mpID+"/tasks/nope", nil))

	// Listing: newest first, pages that join up, filters.
	var all []string
	token := ""
	for range 20 {
		var page struct {
			Runs []struct {
				RunID string            `json:"run_id"`
				State string            `json:"state"`
				Tags  map[string]string `json:"tags"`
			} `json:"runs"`
			NextPageToken string `json:"next_page_token"`
		}
		require.Equal(t, http.StatusOK, e.getJSON("/runs?page_size=3&page_token="+token, &page))
		require.LessOrEqual(t, len(page.Runs), 3)
		for _, r := range page.Runs {
			all = append(all, r.RunID)
			require.NotNil(t, r.Tags)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	require.Len(t, all, len(runs)+1)
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i-1], all[i], "newest first (run ids are time-ordered)")
	}
	var bad struct {
		Runs []struct{ RunID string } `json:"runs"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/runs?tag=batch:bad&state=EXECUTOR_ERROR", &bad))
	require.Len(t, bad.Runs, 1)

	// service-info counts every state from the database.
	var info struct {
		SystemStateCounts map[string]int `json:"system_state_counts"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/service-info", &info))
	require.Len(t, info.SystemStateCounts, 11)
	require.Equal(t, 7, info.SystemStateCounts["COMPLETE"])
	require.Equal(t, 1, info.SystemStateCounts["EXECUTOR_ERROR"])
	require.Equal(t, 1, info.SystemStateCounts["SYSTEM_ERROR"])

	// Prometheus metrics on the API and on an executor.
	metrics := fetch(t, strings.TrimSuffix(e.apiBase, "/ga4gh/wes/v1")+"/metrics")
	for _, want := range []string{
		`wes_runs_submitted_total{engine="mock"} 9`,
		`wes_run_transitions_total{engine="mock",state="COMPLETE"} 7`,
		`wes_projector_events_total{result="applied"}`,
		`wes_run_duration_seconds_count{engine="mock",outcome="COMPLETE"} 7`,
		`wes_http_requests_total{method="POST",route="/ga4gh/wes/v1/runs",status="200"} 9`,
		`wes_outbox_backlog 0`,
		`wes_queue_pending{consumer="executor_mock"`,
	} {
		require.Contains(t, metrics, want)
	}
	execMetrics := fetch(t, "http://127.0.0.1:"+itoa(metricsPort)+"/metrics")
	require.Contains(t, execMetrics, "wes_executor_slots 2")
	require.Contains(t, execMetrics, `wes_executor_attempts_total{engine="mock",outcome=`)
	require.Equal(t, "ready\n", fetch(t, "http://127.0.0.1:"+itoa(metricsPort)+"/readyz"))
}

// Canceling a queued run and a running run ends both CANCELED; cancel is
// idempotent; the seed's base path works too.
func TestCancelQueuedAndRunning(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.startAPI()
	e.start("executor", map[string]string{"WES_EXECUTOR_SLOTS": "1"}, "executor")
	e.waitEngine("mock")

	running := e.submit(map[string]string{"duration": "60s"}, nil)
	e.waitState(running, 20*time.Second, "RUNNING")
	queued := e.submit(map[string]string{"duration": "1s"}, nil)
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, "QUEUED", e.state(queued), "the only slot is busy")

	seedBase := strings.Replace(e.apiBase, "/ga4gh/", "/api/ga4gh/", 1)
	for _, id := range []string{queued, running} {
		for range 2 { // idempotent
			resp, err := http.Post(seedBase+"/runs/"+id+"/cancel", "", nil)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}
	}
	st, _ := e.waitState(queued, 10*time.Second, "CANCELED", "COMPLETE")
	require.Equal(t, "CANCELED", st)
	st, seen := e.waitState(running, 20*time.Second, "CANCELED", "COMPLETE")
	require.Equal(t, "CANCELED", st, "states: %v", seen)
	require.Empty(t, e.run(queued).RunLog.Cmd, "a run canceled in the queue never starts")
	require.Empty(t, e.run(queued).RunLog.Stdout, "and has no log to link to")
	require.NotEmpty(t, e.run(running).RunLog.Stdout)

	// The freed slot takes new work; the canceled queued run never ran.
	next := e.submit(map[string]string{"duration": "100ms"}, nil)
	e.waitComplete(next, 20*time.Second, "the freed slot takes new work")
	require.Equal(t, "CANCELED", e.state(queued))
	var noLog errorResponse
	require.Equal(t, http.StatusNotFound, e.getJSON("/runs/"+queued+"/logs/stdout", &noLog))
	require.Contains(t, noLog.Msg, "the run ended (CANCELED) before its engine wrote any", "a run that ended has no log to wait for")

	var er errorResponse
	require.Equal(t, http.StatusNotFound, e.post("/runs/no-such-run/cancel", "", nil, &er))
	require.Equal(t, 404, er.StatusCode)
}

// A run submitted while NATS is down is answered 200 and dispatched once
// NATS is back.
func TestSubmitWhileNATSDown(t *testing.T) {
	t.Parallel()
	// This test stops and restarts NATS, so it runs its own server (a real
	// nats-server, in this process) rather than the shared one.
	port, dir := freePort(t), t.TempDir()
	ns := startNATS(t, port, dir)
	e := newEnv(t, ns.URL(), "WES")
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")

	ns.Shutdown()
	id := e.submit(map[string]string{"duration": "100ms"}, nil)
	time.Sleep(time.Second)
	require.Equal(t, "QUEUED", e.state(id))

	startNATS(t, port, dir)
	st, seen := e.waitState(id, 60*time.Second, "COMPLETE", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st, "states: %v", seen)
}

// SIGTERM to an executor hands its run back at once (PREEMPTED) and the run
// finishes on another executor.
func TestSIGTERMExecutorRunFinishesElsewhere(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.startAPI()
	first := e.start("executor-a", map[string]string{"WES_EXECUTOR_ID": "exec-a"}, "executor")
	e.waitEngine("mock")

	id := e.submit(map[string]string{"duration": "4s"}, nil)
	e.waitState(id, 20*time.Second, "RUNNING")
	e.start("executor-b", map[string]string{"WES_EXECUTOR_ID": "exec-b"}, "executor")

	start := time.Now()
	require.NoError(t, first.stop(t), "executor exits cleanly on SIGTERM")
	require.Less(t, time.Since(start), 10*time.Second, "hand-back must not wait for the heartbeat timeout")

	st, seen := e.waitState(id, 30*time.Second, "COMPLETE", "SYSTEM_ERROR", "EXECUTOR_ERROR")
	require.Equal(t, "COMPLETE", st, "states: %v", seen)
	logs := strings.Join(e.run(id).RunLog.SystemLogs, "\n")
	require.Contains(t, logs, "exec-a shut down; run handed back")
	require.Contains(t, logs, "attempt 2 on executor exec-b")
}

// `wes api` refuses an out-of-date schema and says what to run.
func TestAPIRefusesOutdatedSchema(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := &env{t: t, vars: map[string]string{
		"WES_DATABASE_URL": databaseURL(t), "WES_NATS_URL": url, "WES_NATS_NAMESPACE": ns,
		"WES_LISTEN_ADDR": "127.0.0.1:" + itoa(freePort(t)),
	}}
	out, err := e.command(nil, "api").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "wes migrate up")
}

// `wes dev` keeps every run across a restart, and a run it handed back
// when it stopped starts again as soon as it is back (not after AckWait:
// the hand-back reached the embedded NATS before it stopped).
func TestDevKeepsRunsAcrossRestart(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	e := &env{t: t, vars: map[string]string{
		"WES_DATA_DIR": t.TempDir(), "DEFAULT_WES_PROVIDER": "mock",
		"WES_LISTEN_ADDR": "127.0.0.1:" + itoa(port), "WES_EXECUTOR_SHUTDOWN_GRACE": "1s",
	}, apiBase: "http://127.0.0.1:" + itoa(port) + "/api/ga4gh/wes/v1"}
	dev := e.start("dev", nil, "dev")
	e.waitReady(dev)
	e.waitEngine("mock")
	id := e.submit(map[string]string{"duration": "100ms"}, map[string]string{"keep": "me"})
	e.waitComplete(id, 20*time.Second, "wes dev runs a run")
	long := e.submit(map[string]string{"duration": "10m"}, nil)
	e.waitState(long, 20*time.Second, "RUNNING")
	var before, after struct {
		CreatedAt string `json:"createdAt"`
	}
	e.getJSON("/service-info", &before)
	require.NoError(t, dev.stop(t))

	dev = e.start("dev-again", nil, "dev")
	e.waitReady(dev)
	e.getJSON("/service-info", &after)
	require.Equal(t, before.CreatedAt, after.CreatedAt, "createdAt is when the service was deployed, not when it last started")
	back := time.Now()
	rl := e.run(id)
	require.Equal(t, "COMPLETE", rl.State)
	require.Equal(t, "me", rl.Request.Tags["keep"])
	require.Eventually(t, func() bool {
		return strings.Contains(strings.Join(e.run(long).RunLog.SystemLogs, "\n"), "attempt 2 on executor")
	}, 15*time.Second, 100*time.Millisecond, "the run handed back at the stop did not start again at once (AckWait is 30 s)")
	t.Logf("the handed-back run started again %s after wes dev was back", time.Since(back).Round(time.Millisecond))
}

// Malformed submissions are refused with 400 and a message naming the fault.
func TestSubmitRefusals(t *testing.T) {
	t.Parallel()
	e := mockPipeline(t)
	for name, tc := range map[string]struct {
		body string
		msg  string
	}{
		"missing type":    {`{"workflow_type_version":"1.0","workflow_url":"https://x/y.cwl"}`, "workflow_type is required"},
		"bad json":        {`{"workflow_type":`, "not a valid RunRequest"},
		"unknown version": {`{"workflow_type":"CWL","workflow_type_version":"9.9","workflow_url":"https://x/y.cwl"}`, "9.9"},
		"unknown type":    {`{"workflow_type":"XYZ","workflow_type_version":"1","workflow_url":"https://x/y.cwl"}`, "XYZ"},
		"relative url":    {`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"wf.cwl"}`, "no workflow_attachment"},
		// Values are checked against the kinds the executors announce: a
		// bad one is the user's to fix now, not a SYSTEM_ERROR later.
		"bad duration": {`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://x/y.cwl","workflow_engine_parameters":{"duration":"banana"}}`,
			`engine parameter duration must be a non-negative duration such as "2s", not "banana"`},
		"bad enum": {`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://x/y.cwl","workflow_engine_parameters":{"outcome":"MAYBE"}}`,
			`engine parameter outcome must be one of COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, not "MAYBE"`},
		"null int": {`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://x/y.cwl","workflow_engine_parameters":{"exit_code":null}}`,
			`engine parameter exit_code must be a non-negative integer, not ""`},
	} {
		var er errorResponse
		status := e.post("/runs", "application/json", bytes.NewBufferString(tc.body), &er)
		require.Equal(t, http.StatusBadRequest, status, name)
		require.Equal(t, http.StatusBadRequest, er.StatusCode, name)
		require.Contains(t, er.Msg, tc.msg, name)
	}
	status, body := e.submitMultipart(map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.0", "workflow_url": "wf.cwl",
	}, map[string]string{"../wf.cwl": "x"})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(body), "parent directory")

	var er errorResponse
	require.Equal(t, http.StatusNotFound, e.getJSON("/runs/unknown", &er))
	require.Equal(t, 404, er.StatusCode)

	// Text the database cannot hold, in ids, filters and tags: a 4xx that
	// says so, never a 500 from the database refusing it.
	for path, want := range map[string]int{
		"/runs/%00": 404, "/runs/%ff/status": 404, "/runs/unknown/tasks/%00": 404,
		"/runs?tag=a:%00": 400, "/runs?tag=a:%ff": 400,
		"/runs?tag=a:1&tag=a:2":                   400,
		"/runs?" + strings.Repeat("tag=k:v&", 65): 400, // more filters than a run may have tags
	} {
		er = errorResponse{}
		require.Equal(t, want, e.getJSON(path, &er), path)
		require.Equal(t, want, er.StatusCode, path)
	}
	er = errorResponse{}
	require.Equal(t, http.StatusBadRequest, e.post("/runs", "application/json",
		strings.NewReader(`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://x/y.cwl","tags":{"a":"x\u0000y"}}`), &er))
	require.Contains(t, er.Msg, "NUL")
	// A known path with a method it does not take.
	req, err := http.NewRequest(http.MethodDelete, e.apiBase+"/runs/unknown", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"), "a 405 says what the path takes")
	resp, err = http.Head(e.apiBase + "/service-info")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "every GET answers HEAD")
	root := strings.TrimSuffix(e.apiBase, "/ga4gh/wes/v1")
	resp, err = http.Head(root + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the root's too")
	resp, err = http.Post(root+"/readyz", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
	var list struct {
		Runs []any `json:"runs"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/runs", &list))
	require.Empty(t, list.Runs, "nothing half-written by refused submissions")
}

// A request is refused (413) when its queue message would not fit in the
// broker's max_payload with its headers: accepted, it could never be
// queued. One that fits with them is queued and runs.
func TestRequestsTheBrokerCannotQueueAreRefused(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	maxPayload := int(nc.MaxPayload())
	nc.Close()
	e := newEnv(t, url, ns)
	e.vars["WES_MAX_FIELD_BYTES"] = strconv.Itoa(2 * maxPayload) // the broker's limit comes first
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")
	request := func(paramBytes int) []byte {
		body, err := json.Marshal(map[string]any{
			"workflow_type": "CWL", "workflow_type_version": "v1.0", "workflow_url": "https://example.com/wf.cwl",
			"workflow_params": map[string]string{"x": strings.Repeat("a", paramBytes)},
		})
		require.NoError(t, err)
		return body
	}

	// The message is a few hundred bytes over its params: under
	// max_payload, but not with room for its headers.
	var er errorResponse
	status := e.post("/runs", "application/json", bytes.NewReader(request(maxPayload-2500)), &er)
	require.Equal(t, http.StatusRequestEntityTooLarge, status, er.Msg)
	require.Contains(t, er.Msg, "more than the broker takes")

	var out struct {
		RunID string `json:"run_id"`
	}
	require.Equal(t, http.StatusOK, e.post("/runs", "application/json", bytes.NewReader(request(maxPayload-6000)), &out))
	st, _ := e.waitState(out.RunID, 30*time.Second, "COMPLETE", "SYSTEM_ERROR", "EXECUTOR_ERROR")
	require.Equal(t, "COMPLETE", st, "an accepted request is queued and runs")
}

// A run the executor refuses for what it asks (here the mock: a failure
// with exit code 0) ends EXECUTOR_ERROR, saying why, as the API shows it:
// the refusal comes before the engine starts, from INITIALIZING.
func TestARefusedRequestEndsExecutorError(t *testing.T) {
	t.Parallel()
	e := mockPipeline(t)
	id := e.submit(map[string]string{"outcome": "EXECUTOR_ERROR", "exit_code": "0"}, nil)
	st, _ := e.waitState(id, 30*time.Second, "EXECUTOR_ERROR", "SYSTEM_ERROR", "COMPLETE")
	require.Equal(t, "EXECUTOR_ERROR", st)
	require.Contains(t, fmt.Sprint(e.run(id).RunLog.SystemLogs), "must not be 0 when outcome is EXECUTOR_ERROR")
}

func itoa(i int) string { return strconv.Itoa(i) }

// A followed log streams while the run runs and ends with the run; Range
// requests get the bytes asked for.
func TestLogFollowAndRange(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["WES_LOG_INTERVAL"] = "200ms"
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")

	id := e.submit(map[string]string{"duration": "3s"}, nil)
	e.waitState(id, 20*time.Second, "RUNNING")
	start := time.Now()
	body := fetch(t, e.apiBase+"/runs/"+id+"/logs/stdout?follow=true")
	require.Contains(t, body, "mock: running")
	require.Contains(t, body, "mock: done", "follow ends only when the run has ended")
	require.Greater(t, time.Since(start), time.Second, "follow returned before the run ended")
	require.Equal(t, "COMPLETE", e.state(id))

	stdout := e.apiBase + "/runs/" + id + "/logs/stdout"
	status, part := getRange(t, stdout, "0-4")
	require.Equal(t, http.StatusPartialContent, status)
	require.Equal(t, "mock:", string(part))

	// A request of many ranges, each a read of its own, gets the whole log
	// instead.
	var ranges []string
	for i := range 20 {
		ranges = append(ranges, fmt.Sprintf("%d-%d", i, i))
	}
	status, whole := getRange(t, stdout, strings.Join(ranges, ","))
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(whole), "mock: done")

	// A range that starts past the first byte (read from the chunk that
	// holds it on) is the bytes asked for.
	for _, rg := range []string{"-5", "7-", "3-9"} {
		status, part = getRange(t, stdout, rg)
		require.Equal(t, http.StatusPartialContent, status, rg)
		want := map[string]string{"-5": string(whole[len(whole)-5:]), "7-": string(whole[7:]), "3-9": string(whole[3:10])}[rg]
		require.Equal(t, want, string(part), rg)
	}

	// A range past the end is a 416 with the log's size, as an
	// ErrorResponse like every other error.
	req, err := http.NewRequest(http.MethodGet, stdout, nil)
	require.NoError(t, err)
	req.Header.Set("Range", "bytes=999999-")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var er errorResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&er))
	resp.Body.Close()
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Equal(t, fmt.Sprintf("bytes */%d", len(whole)), resp.Header.Get("Content-Range"))
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, er.StatusCode)
	require.Contains(t, er.Msg, "invalid range")
}

// An executor killed with SIGKILL mid-run: once its registry entry lapses
// the API shows the run PREEMPTED (never a RUNNING that nothing runs), and
// the run finishes on another executor as a new attempt.
func TestSIGKILLedExecutorRunIsPreemptedThenFinished(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["WES_EXECUTOR_TTL"] = "3s"
	e.startAPI()
	victim := e.start("executor-a", map[string]string{"WES_EXECUTOR_ID": "exec-a"}, "executor")
	e.waitEngine("mock")

	id := e.submit(map[string]string{"duration": "3s"}, nil)
	e.waitState(id, 20*time.Second, "RUNNING")
	require.NoError(t, victim.cmd.Process.Kill())

	st, seen := e.waitState(id, 30*time.Second, "PREEMPTED", "COMPLETE")
	require.Equal(t, "PREEMPTED", st, "states %v", seen)
	require.Contains(t, strings.Join(e.run(id).RunLog.SystemLogs, "\n"), "executor exec-a stopped answering")

	e.start("executor-b", map[string]string{"WES_EXECUTOR_ID": "exec-b"}, "executor")
	st, seen = e.waitState(id, 30*time.Second, "COMPLETE", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st, "states %v", seen)
	require.Contains(t, strings.Join(e.run(id).RunLog.SystemLogs, "\n"), "attempt 2 on executor exec-b")

	metrics := fetch(t, strings.TrimSuffix(e.apiBase, "/ga4gh/wes/v1")+"/metrics")
	require.Contains(t, metrics, `wes_reconciler_repairs_total{kind="orphaned"} 1`)
}

// A poison event (undecodable, or of a version this binary cannot read)
// goes to the dead-letter stream with its reason, is counted, and does not
// block the runs behind it.
func TestPoisonEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")

	js, names := jetStream(t, url, ns)
	ctx := context.Background()
	_, err := js.Publish(ctx, names.EventSubject("some-run"), []byte("not json"))
	require.NoError(t, err)
	_, err = js.Publish(ctx, names.EventSubject("some-run"), []byte(`{"v":99,"run_id":"some-run"}`))
	require.NoError(t, err)

	id := e.submit(map[string]string{"duration": "10ms"}, nil)
	e.waitComplete(id, 20*time.Second, "the runs behind poison events are not blocked")

	var reasons []string
	require.Eventually(t, func() bool {
		cons, err := js.OrderedConsumer(ctx, names.DeadLetterStream(), jetstream.OrderedConsumerConfig{})
		if err != nil {
			return false
		}
		batch, err := cons.FetchNoWait(10)
		if err != nil {
			return false
		}
		reasons = nil
		for m := range batch.Messages() {
			reasons = append(reasons, m.Headers().Get("Wes-Dead-Reason"))
		}
		return len(reasons) == 2
	}, 10*time.Second, 200*time.Millisecond)
	require.Contains(t, reasons[0], "undecodable")
	require.Contains(t, reasons[1], "unsupported payload version")
	metrics := fetch(t, strings.TrimSuffix(e.apiBase, "/ga4gh/wes/v1")+"/metrics")
	require.Contains(t, metrics, `wes_projector_events_total{result="poison"} 2`)
}

// A run tagged wes.retry_failures=true has its workflow failure retried, up
// to WES_MAX_ATTEMPTS attempts, each shown in its system logs.
func TestRetryFailuresOnRequest(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["WES_MAX_ATTEMPTS"] = "2"
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")

	params := map[string]string{"duration": "10ms", "outcome": "EXECUTOR_ERROR", "exit_code": "5"}
	retried := e.submit(params, map[string]string{"wes.retry_failures": "true"})
	once := e.submit(params, nil)

	st, seen := e.waitState(retried, 30*time.Second, "EXECUTOR_ERROR", "COMPLETE", "SYSTEM_ERROR")
	require.Equal(t, "EXECUTOR_ERROR", st, "states %v", seen)
	logs := strings.Join(e.run(retried).RunLog.SystemLogs, "\n")
	require.Contains(t, logs, "attempt 1: the workflow failed with exit code 5; retrying")
	require.Contains(t, logs, "attempt 2 on executor")
	require.Equal(t, 5, *e.run(retried).RunLog.ExitCode)

	st, _ = e.waitState(once, 30*time.Second, "EXECUTOR_ERROR", "COMPLETE", "SYSTEM_ERROR")
	require.Equal(t, "EXECUTOR_ERROR", st)
	require.NotContains(t, strings.Join(e.run(once).RunLog.SystemLogs, "\n"), "retrying", "no retry unless asked")
}

// An upload the client abandons mid-attachment leaves no chunk in the
// object store: the put removes what it stored, though the request's
// context is gone.
func TestAbandonedUploadLeavesNoChunks(t *testing.T) {
	t.Parallel()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.startAPI()

	js, names := jetStream(t, url, ns)
	ctx := context.Background()
	objects, err := js.Stream(ctx, "OBJ_"+names.ObjectsBucket())
	require.NoError(t, err)
	stored := func() uint64 {
		info, err := objects.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	before := stored()

	host := strings.TrimPrefix(e.apiBase, "http://")
	host = host[:strings.IndexByte(host, '/')]
	conn, err := net.Dial("tcp", host)
	require.NoError(t, err)
	const boundary = "abandoned"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"workflow_type\"\r\n\r\nCWL\r\n" +
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"workflow_attachment\"; filename=\"big.txt\"\r\n\r\n"
	sent := 3 << 20
	fmt.Fprintf(conn, "POST /ga4gh/wes/v1/runs HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		host, boundary, len(head)+2*sent, head)
	_, err = conn.Write(bytes.Repeat([]byte("x"), sent))
	require.NoError(t, err)
	// Some chunks are stored by now; then the client goes, abruptly.
	require.Eventually(t, func() bool { return stored() > before }, 10*time.Second, 20*time.Millisecond, "the upload never reached the object store")
	require.NoError(t, conn.(*net.TCPConn).SetLinger(0))
	require.NoError(t, conn.Close())

	require.Eventually(t, func() bool { return stored() == before }, 10*time.Second, 50*time.Millisecond,
		"chunks of the abandoned upload are left in the object store")
}

// `wes dev` on a machine with no engine is ready all the same (it says
// which engines are missing, and refuses submissions with a 400 that
// says so): readiness waits for the executor's search, not for engines.
func TestDevWithoutEnginesIsReady(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	root := "http://127.0.0.1:" + itoa(port)
	e := &env{t: t, vars: map[string]string{
		"WES_DATA_DIR": t.TempDir(), "DEFAULT_WES_PROVIDER": "local", "PATH": t.TempDir(),
		"WES_LISTEN_ADDR": "127.0.0.1:" + itoa(port),
	}, apiBase: root + "/ga4gh/wes/v1"}
	dev := e.start("dev", nil, "dev")
	require.Eventually(t, func() bool {
		resp, err := http.Get(root + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "wes dev without engines was never ready\n%s", dev.output())
	require.Contains(t, dev.output(), "NO WORKFLOW ENGINE FOUND")
}
