package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// receiver is a real HTTP endpoint that records what it is sent; it fails
// the first failFirst requests.
type receiver struct {
	mu        sync.Mutex
	bodies    [][]byte
	failFirst int
	calls     int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	if rc.calls <= rc.failFirst {
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	rc.bodies = append(rc.bodies, body)
}

func (rc *receiver) received() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...)
}

// Failed runs raise alerts on a JSON webhook and a Slack-compatible one,
// retried when the receiver fails; successful runs raise none.
func TestAlerting(t *testing.T) {
	t.Parallel()
	hook, slack, callback := &receiver{failFirst: 1}, &receiver{}, &receiver{}
	hookSrv, slackSrv, callbackSrv := httptest.NewServer(hook), httptest.NewServer(slack), httptest.NewServer(callback)
	t.Cleanup(hookSrv.Close)
	t.Cleanup(slackSrv.Close)
	t.Cleanup(callbackSrv.Close)

	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["WES_ALERT_WEBHOOK_URL"] = hookSrv.URL
	e.vars["WES_ALERT_SLACK_URL"] = slackSrv.URL
	e.vars["WES_CALLBACK_ALLOW"] = callbackSrv.URL + "/hooks/"
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")

	ok := e.submit(map[string]string{"duration": "10ms"}, map[string]string{"wes.callback_url": callbackSrv.URL + "/hooks/run"})
	failed := e.submit(map[string]string{"duration": "10ms", "outcome": "EXECUTOR_ERROR", "exit_code": "2"}, map[string]string{"team": "genomics"})
	broken := e.submit(map[string]string{"duration": "10ms", "outcome": "SYSTEM_ERROR"}, nil)
	for _, id := range []string{ok, failed, broken} {
		e.waitState(id, 20*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	}

	var alerts map[string]map[string]any
	require.Eventually(t, func() bool {
		alerts = map[string]map[string]any{}
		for _, b := range hook.received() {
			var a map[string]any
			require.NoError(t, json.Unmarshal(b, &a))
			alerts[a["run_id"].(string)] = a
		}
		return len(alerts) >= 2 && len(slack.received()) >= 2
	}, 30*time.Second, 100*time.Millisecond, "alerts not delivered")

	require.Equal(t, "EXECUTOR_ERROR", alerts[failed]["state"])
	require.EqualValues(t, 2, alerts[failed]["exit_code"])
	require.Equal(t, "the workflow failed: mock exited with status 2 (its stderr says why)", alerts[failed]["error"])
	require.Equal(t, "https://example.com/workflows/hello-world.cwl", alerts[failed]["workflow_url"])
	require.Equal(t, map[string]any{"team": "genomics"}, alerts[failed]["tags"])
	require.Contains(t, alerts[failed]["url"], "/ga4gh/wes/v1/runs/"+failed)
	require.Equal(t, "SYSTEM_ERROR", alerts[broken]["state"])
	require.Contains(t, alerts[broken]["error"], "simulated system error")
	require.NotContains(t, alerts, ok, "a complete run raises no alert")

	var texts []string
	for _, b := range slack.received() {
		var m map[string]string
		require.NoError(t, json.Unmarshal(b, &m))
		texts = append(texts, m["text"])
	}
	require.Contains(t, texts[0]+texts[1], failed)
	require.GreaterOrEqual(t, hook.calls, 3, "the first, failed delivery was retried")

	// The run that asked for a callback hears each of its state changes.
	require.Eventually(t, func() bool { return len(callback.received()) >= 3 }, 20*time.Second, 100*time.Millisecond)
	var states []string
	for _, b := range callback.received() {
		var a map[string]any
		require.NoError(t, json.Unmarshal(b, &a))
		require.Equal(t, ok, a["run_id"])
		states = append(states, a["state"].(string))
	}
	require.Equal(t, []string{"INITIALIZING", "RUNNING", "COMPLETE"}, states)

	// A callback outside the operator's allow-list is refused at submit.
	var er errorResponse
	status := e.post("/runs", "application/json", bytes.NewBufferString(
		`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://x/wf.cwl","tags":{"wes.callback_url":"http://169.254.169.254/latest"}}`), &er)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, er.Msg, "WES_CALLBACK_ALLOW")
}
