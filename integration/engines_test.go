package integration

import (
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireEngines skips, loudly, when an engine CI installs is missing here.
func requireEngines(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("SKIPPED: %s is not installed (apt-get install cwltool snakemake toil); .ci/run installs it", b)
		}
	}
}

// example reads every file of examples/<name> as attachments.
func example(t testing.TB, name string) (files map[string]string, params string) {
	t.Helper()
	dir := filepath.Join("..", "examples", name)
	files = map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "params.json" {
			params = string(data)
			return nil
		}
		files[filepath.ToSlash(rel)] = string(data)
		return nil
	})
	require.NoError(t, err)
	return files, params
}

func (e *env) submitExample(name string, fields map[string]string) string {
	e.t.Helper()
	files, params := example(e.t, name)
	if _, ok := fields["workflow_params"]; !ok {
		fields["workflow_params"] = params
	}
	status, body := e.submitMultipart(fields, files)
	require.Equal(e.t, http.StatusOK, status, "%s", body)
	var out struct {
		RunID string `json:"run_id"`
	}
	require.NoError(e.t, json.Unmarshal(body, &out))
	return out.RunID
}

func fetch(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, body)
	return string(body)
}

func (e *env) outputURL(rl runLog, key string) string {
	e.t.Helper()
	f, ok := rl.Outputs[key].(map[string]any)
	require.True(e.t, ok, "output %q missing: %v", key, rl.Outputs)
	loc, _ := f["location"].(string)
	require.True(e.t, strings.HasPrefix(loc, "http://"), "output location is an API URL: %q", loc)
	return loc
}

// The examples run on the real engines through the whole system.
func TestRealEngines(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool", "snakemake")
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["DEFAULT_WES_PROVIDER"] = "local"
	e.vars["WES_CANCEL_GRACE"] = "5s"
	e.vars["WES_LOG_INTERVAL"] = "500ms"
	e.startAPI()
	e.start("executor", map[string]string{"WES_EXECUTOR_SLOTS": "3"}, "executor")
	e.waitEngine("cwltool")
	e.waitEngine("snakemake")

	hello := e.submitExample("cwl-hello", map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "hello.cwl",
	})
	workflow := e.submitExample("cwl-workflow", map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "count-lines.cwl",
	})
	smk := e.submitExample("snakemake", map[string]string{
		"workflow_type": "Snakemake", "workflow_type_version": "7", "workflow_url": "Snakefile",
	})

	st, seen := e.waitState(hello, 90*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st, "states %v", seen)
	rl := e.run(hello)
	require.Equal(t, 0, *rl.RunLog.ExitCode)
	require.Equal(t, "Hello from WES\n", fetch(t, e.outputURL(rl, "greeting")))
	require.Contains(t, rl.RunLog.Cmd, "--outdir")
	require.Contains(t, fetch(t, rl.RunLog.Stderr), "Final process status is success")
	var tasks struct {
		TaskLogs []struct {
			Name     string `json:"name"`
			ExitCode *int   `json:"exit_code"`
		} `json:"task_logs"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/runs/"+hello+"/tasks", &tasks))
	require.NotEmpty(t, tasks.TaskLogs)
	require.NotNil(t, tasks.TaskLogs[0].ExitCode)

	st, seen = e.waitState(workflow, 120*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st, "states %v", seen)
	rl = e.run(workflow)
	require.Equal(t, "5\n", fetch(t, e.outputURL(rl, "total")))
	var listing struct {
		Files []struct{ Path, URL string } `json:"files"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/runs/"+workflow+"/outputs", &listing))
	require.Len(t, listing.Files, 3, "two counts and the total")

	st, seen = e.waitState(smk, 120*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st, "states %v", seen)
	rl = e.run(smk)
	require.Equal(t, "Hi, Ada!\nHi, Grace!\nHi, Barbara!\n", fetch(t, e.outputURL(rl, "results/all.txt")))
	require.Equal(t, http.StatusOK, e.getJSON("/runs/"+smk+"/tasks", &tasks))
	names := map[string]bool{}
	for _, tl := range tasks.TaskLogs {
		names[tl.Name] = true
	}
	require.True(t, names["greet"] && names["gather"], "snakemake jobs as tasks: %v", names)

	// A failing workflow: EXECUTOR_ERROR with the engine's exit code.
	status, body := e.submitMultipart(map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "fail.cwl",
	}, map[string]string{"fail.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [sh, -c, 'exit 3']\ninputs: []\noutputs: []\n"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	failID := strings.Split(string(body), `"`)[3]
	st, _ = e.waitState(failID, 60*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	require.Equal(t, "EXECUTOR_ERROR", st)
	require.NotZero(t, *e.run(failID).RunLog.ExitCode)

	// Refused workflow URLs.
	for _, u := range []string{"file:///etc/passwd", "/etc/passwd", "ftp://example.com/wf.cwl", "../wf.cwl"} {
		status, body := e.submitMultipart(map[string]string{
			"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": u,
		}, map[string]string{"wf.cwl": "cwlVersion: v1.2\n"})
		require.Equal(t, http.StatusBadRequest, status, "workflow_url %s: %s", u, body)
	}
}

// Cancel stops the engine and every process it started; the run never
// turns COMPLETE afterwards.
func TestRealEngineCancel(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool")
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["DEFAULT_WES_PROVIDER"] = "local"
	e.vars["WES_CANCEL_GRACE"] = "5s"
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("cwltool")

	status, body := e.submitMultipart(map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "sleep.cwl",
	}, map[string]string{"sleep.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [sleep, '313']\ninputs: []\noutputs: []\n"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	id := strings.Split(string(body), `"`)[3]
	e.waitState(id, 60*time.Second, "RUNNING")
	require.Eventually(t, func() bool { return len(processesWith("sleep\x00313")) > 0 }, 60*time.Second, 200*time.Millisecond,
		"the workflow's sleep never started")

	require.Equal(t, http.StatusOK, e.post("/runs/"+id+"/cancel", "", nil, nil))
	st, seen := e.waitState(id, 30*time.Second, "CANCELED", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	require.Equal(t, "CANCELED", st, "states %v", seen)
	require.Empty(t, processesWith("sleep\x00313"), "a process of the canceled run survived")
	require.Empty(t, processesWith(id), "a process of the canceled run survived")
	time.Sleep(2 * time.Second)
	require.Equal(t, "CANCELED", e.state(id), "a canceled run stays canceled")
}

// processesWith lists pids whose command line or environment contains s.
func processesWith(s string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		for _, f := range []string{"cmdline", "environ"} {
			data, err := os.ReadFile(filepath.Join("/proc", d.Name(), f))
			if err == nil && strings.Contains(string(data), s) {
				if stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
					continue // a zombie holds nothing
				}
				pids = append(pids, d.Name())
				break
			}
		}
	}
	return pids
}

// An engine that disappears from the executor's host after start-up fails
// the run with SYSTEM_ERROR and says why.
func TestMissingEngineIsSystemError(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool")
	real, err := exec.LookPath("cwltool")
	require.NoError(t, err)
	bin := t.TempDir()
	link := filepath.Join(bin, "cwltool")
	require.NoError(t, os.Symlink(real, link))

	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["DEFAULT_WES_PROVIDER"] = "local"
	e.startAPI()
	e.start("executor", map[string]string{"PATH": bin + ":/usr/bin:/bin"}, "executor")
	e.waitEngine("cwltool")
	require.NoError(t, os.Remove(link))

	status, body := e.submitMultipart(map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "hello.cwl",
	}, map[string]string{"hello.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\ninputs: []\noutputs: []\n"})
	require.Equal(t, http.StatusOK, status, "%s", body)
	id := strings.Split(string(body), `"`)[3]
	st, seen := e.waitState(id, 30*time.Second, "SYSTEM_ERROR", "COMPLETE", "EXECUTOR_ERROR")
	require.Equal(t, "SYSTEM_ERROR", st, "states %v", seen)
	require.Contains(t, strings.Join(e.run(id).RunLog.SystemLogs, "\n"), "engine cwltool is no longer installed")
}

// `wes dev` is ready (/readyz) only once its built-in executor has
// announced the engines it found: a script that waits for /readyz and then
// submits is not told that no engine is available (engine detection takes
// seconds; the API answers at once).
func TestDevIsReadyWithItsEngines(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool")
	port := freePort(t)
	root := "http://127.0.0.1:" + itoa(port)
	e := &env{t: t, vars: map[string]string{
		"WES_DATA_DIR": t.TempDir(), "DEFAULT_WES_PROVIDER": "local",
		"WES_LISTEN_ADDR": "127.0.0.1:" + itoa(port), "WES_EXECUTOR_SHUTDOWN_GRACE": "1s",
	}, apiBase: root + "/ga4gh/wes/v1"}
	dev := e.start("dev", nil, "dev")
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(root + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		require.True(t, time.Now().Before(deadline), "wes dev was never ready\n%s", dev.output())
		time.Sleep(20 * time.Millisecond)
	}
	var info struct {
		Versions map[string]any `json:"workflow_type_versions"`
	}
	e.getJSON("/service-info", &info)
	require.Contains(t, info.Versions, "CWL", "ready, but no engine offered yet")

	// Health is at the root; asked below the base path, the 404 says so.
	resp, err := http.Get(e.apiBase + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, string(body), "/readyz and /metrics are at the root")
}

// `wes dev` whose port is taken says so, and not that its engines are
// broken: engine detection stopped by the failure warns of nothing.
func TestDevOnATakenPortSaysSo(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { taken.Close() })
	e := &env{t: t, vars: map[string]string{
		"WES_DATA_DIR": t.TempDir(), "DEFAULT_WES_PROVIDER": "local", "WES_LISTEN_ADDR": taken.Addr().String(),
	}}
	dev := e.start("dev", nil, "dev")
	select {
	case err := <-dev.done:
		dev.done <- err
		require.Error(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("wes dev did not stop")
	}
	out := dev.output()
	require.Contains(t, out, "address already in use")
	require.NotContains(t, out, "NO WORKFLOW ENGINE FOUND")
	require.NotContains(t, out, "version could not be read")
	require.NotContains(t, out, "cannot read outbox")
}
