package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The client CLI against a running server: submit with attachments found by
// reference, wait with the run's exit code, list, outputs, errors.
func TestClientCLI(t *testing.T) {
	t.Parallel()
	e := mockPipeline(t)
	client := map[string]string{"WES_API_URL": strings.Replace(e.apiBase, "/ga4gh/", "/api/ga4gh/", 1)}
	cli := func(args ...string) (string, int) {
		out, err := e.command(client, append([]string{"runs"}, args...)...).CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		require.NoError(t, err, "%s", out)
		return string(out), 0
	}

	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "tools"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wf.cwl"), []byte("cwlVersion: v1.2\nclass: Workflow\nsteps:\n  a:\n    run: tools/a.cwl\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tools", "a.cwl"), []byte("cwlVersion: v1.2\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "job.yml"), []byte("in:\n  class: File\n  location: data.txt\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data.txt"), []byte("x\n"), 0o644))

	out, code := cli("submit", filepath.Join(dir, "wf.cwl"), filepath.Join(dir, "job.yml"),
		"--engine-param", "duration=100ms", "--tag", "who=cli", "--wait")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "COMPLETE")
	id := strings.Fields(out)[0]

	var rl struct {
		Request struct {
			WorkflowType   string            `json:"workflow_type"`
			WorkflowParams map[string]any    `json:"workflow_params"`
			Tags           map[string]string `json:"tags"`
		} `json:"request"`
	}
	out, code = cli("get", id)
	require.Equal(t, 0, code, out)
	require.NoError(t, json.Unmarshal([]byte(out), &rl))
	require.Equal(t, "CWL", rl.Request.WorkflowType, "type guessed from the file")
	require.Equal(t, "cli", rl.Request.Tags["who"])
	require.Contains(t, rl.Request.WorkflowParams, "in", "YAML params sent as JSON")

	// The run's exit code becomes the CLI's.
	out, code = cli("submit", filepath.Join(dir, "wf.cwl"), "--engine-param", "duration=10ms",
		"--engine-param", "outcome=EXECUTOR_ERROR", "--engine-param", "exit_code=4", "--wait")
	require.Equal(t, 4, code, out)
	require.Contains(t, out, "EXECUTOR_ERROR")

	out, code = cli("list", "--tag", "who:cli")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, id)
	require.Contains(t, out, "CWL v1.2")

	out, code = cli("status", "no-such-run")
	require.Equal(t, 1, code)
	require.Contains(t, out, "not found")

	out, code = cli("submit", filepath.Join(dir, "wf.cwl"), "--engine-param", "bogus=1")
	require.Equal(t, 1, code)
	require.Contains(t, out, `"bogus" is not accepted`, "the server's msg is shown")
}

// wes cwl-runner runs a CWL workflow through the server like a local
// cwl-runner: the output object on stdout, files in --outdir, the run's
// exit code as its own.
func TestCWLRunner(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool")
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["DEFAULT_WES_PROVIDER"] = "local"
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("cwltool")
	client := map[string]string{"WES_API_URL": e.apiBase}

	outdir := t.TempDir()
	cmd := e.command(client, "cwl-runner", "--outdir", outdir, "--quiet",
		filepath.Join("..", "examples", "cwl-workflow", "count-lines.cwl"), filepath.Join("..", "examples", "cwl-workflow", "params.json"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "stderr: %s", stderr.String())
	var outputs struct {
		Total struct {
			Location, Path string
		} `json:"total"`
		Counts []map[string]any `json:"counts"`
	}
	require.NoError(t, json.Unmarshal(out, &outputs), "stdout is the output object: %s", out)
	require.Equal(t, "file://"+filepath.Join(outdir, "total.txt"), outputs.Total.Location)
	data, err := os.ReadFile(outputs.Total.Path)
	require.NoError(t, err)
	require.Equal(t, "5\n", string(data))
	require.Len(t, outputs.Counts, 2)

	fail := filepath.Join(t.TempDir(), "fail.cwl")
	require.NoError(t, os.WriteFile(fail, []byte("cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [sh, -c, 'exit 3']\ninputs: []\noutputs: []\n"), 0o644))
	failed := e.command(client, "cwl-runner", "--quiet", fail)
	var failStderr strings.Builder
	failed.Stderr = &failStderr
	err = failed.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.NotZero(t, exit.ExitCode(), "the engine's failure is the runner's")
	require.Contains(t, failStderr.String(), "exited with status: 3", "--quiet still says why the run failed (a harness always passes it)")

	// tool.cwl#main: a process of a packed document.
	packedDir := t.TempDir()
	packed, job := filepath.Join(packedDir, "packed.cwl"), filepath.Join(packedDir, "job.json")
	require.NoError(t, os.WriteFile(packed, []byte("cwlVersion: v1.2\n$graph:\n- id: main\n  class: CommandLineTool\n  baseCommand: echo\n"+
		"  inputs:\n    message: {type: string, inputBinding: {position: 1}}\n  outputs:\n    greeting: {type: stdout}\n  stdout: greeting.txt\n"), 0o644))
	require.NoError(t, os.WriteFile(job, []byte(`{"message": "packed"}`), 0o644))
	out, err = e.command(client, "cwl-runner", "--outdir", t.TempDir(), "--quiet", packed+"#main", job).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Logf("stderr: %s", ee.Stderr)
		}
	}
	require.NoError(t, err)
	require.Contains(t, string(out), "greeting")
}
