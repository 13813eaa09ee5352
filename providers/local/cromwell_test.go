package local

import (
	"archive/zip"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/providers"
)

// Cromwell cannot be installed on the development machine: these tests need
// no Cromwell. The last one runs the provider against a stand-in launcher
// that answers as `cromwell run` does (its metadata file, its exit status).

func cromwellSpec(t *testing.T) *runSpec {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	r := &runSpec{
		dir: dir, inputs: filepath.Join(dir, "inputs"), work: filepath.Join(dir, "work"),
		tmp: filepath.Join(dir, "tmp"), outputs: filepath.Join(dir, "outputs"),
		params: filepath.Join(dir, "params.json"), workflow: filepath.Join(dir, "inputs", "hello.wdl") + "#ignored",
		cores: 1,
	}
	r.job.Attempt = 1
	for _, d := range []string{r.inputs, r.work, r.tmp, r.outputs} {
		require.NoError(t, os.MkdirAll(d, 0o750))
	}
	return r
}

func TestCromwellArgv(t *testing.T) {
	t.Parallel()
	r := cromwellSpec(t)
	argv := cromwell().argv("/opt/bin/cromwell", r)
	requireNoShell(t, argv)
	require.Equal(t, []string{"/opt/bin/cromwell", "run", filepath.Join(r.inputs, "hello.wdl")}, argv[:3], "single-workflow mode, the workflow without its fragment")
	require.Equal(t, r.params, flagValue(t, argv, "--inputs"))
	require.Equal(t, filepath.Join(r.work, "imports-1.zip"), flagValue(t, argv, "--imports"), "Cromwell reads imports from a zip")
	require.Equal(t, filepath.Join(r.work, "metadata-1.json"), flagValue(t, argv, "--metadata-output"))

	r.job.Attempt = 3
	argv = cromwell().argv("/opt/bin/cromwell", r)
	require.Equal(t, filepath.Join(r.work, "metadata-3.json"), flagValue(t, argv, "--metadata-output"), "a retry never reads the last attempt's metadata")
}

// cromwellMetadataFixture is metadata as Cromwell 86 writes it with
// --metadata-output (trimmed): a scattered call whose second shard needed a
// second attempt, a sub-workflow, and a failed call.
const cromwellMetadataFixture = `{
  "workflowName": "hello", "id": "2c2d6a1e-0000-4000-8000-000000000001", "status": "Failed",
  "start": "2024-05-01T10:00:00.000Z", "end": "2024-05-01T10:01:00.000Z",
  "outputs": {},
  "calls": {
    "hello.say": [
      {"executionStatus": "Done", "shardIndex": 0, "attempt": 1, "returnCode": 0,
       "commandLine": "echo 'Hello, a' > out.txt", "start": "2024-05-01T10:00:01.100-05:00", "end": "2024-05-01T10:00:02.200-05:00",
       "stdout": "/x/stdout", "stderr": "/x/stderr", "callRoot": "/x"},
      {"executionStatus": "RetryableFailure", "shardIndex": 1, "attempt": 1, "returnCode": 137,
       "commandLine": "echo 'Hello, b' > out.txt", "start": "2024-05-01T15:00:01.000Z", "end": "2024-05-01T15:00:03.000Z",
       "failures": [{"message": "The job was killed (137)", "causedBy": []}]},
      {"executionStatus": "Done", "shardIndex": 1, "attempt": 2, "returnCode": 0,
       "commandLine": "echo 'Hello, b' > out.txt", "start": "2024-05-01T15:00:04.000Z", "end": "2024-05-01T15:00:05.000Z"}
    ],
    "hello.inner": [
      {"executionStatus": "Failed", "shardIndex": -1, "attempt": 1,
       "subWorkflowMetadata": {"workflowName": "inner", "status": "Failed", "calls": {
         "inner.count": [{"executionStatus": "Failed", "shardIndex": -1, "attempt": 1, "returnCode": 1,
           "commandLine": "wc -l missing.txt", "start": "2024-05-01T15:00:06.000Z", "end": "2024-05-01T15:00:07.000Z",
           "failures": [{"message": "Job inner.count:NA:1 exited with return code 1 which has not been declared as a valid return code.", "causedBy": []}]}]
       }}}
    ]
  },
  "failures": [{"message": "Workflow failed", "causedBy": [
    {"message": "Job inner.count:NA:1 exited with return code 1 which has not been declared as a valid return code.", "causedBy": []}]}]
}`

func TestCromwellMetadata(t *testing.T) {
	t.Parallel()
	var md cromwellMeta
	require.NoError(t, json.Unmarshal([]byte(cromwellMetadataFixture), &md))

	tasks := md.tasks()
	ids := make([]string, len(tasks))
	for i, task := range tasks {
		ids[i] = task.ID
	}
	require.Equal(t, []string{"hello.inner:NA:1/inner.count:NA:1", "hello.say:0:1", "hello.say:1:1", "hello.say:1:2"}, ids,
		"one task per call attempt, a sub-workflow's calls in its place, after its call's key")

	count, say0, say1 := tasks[0], tasks[1], tasks[2]
	require.Equal(t, "inner.count", count.Name)
	require.Equal(t, []string{"/bin/bash", "-c", "wc -l missing.txt"}, count.Cmd)
	require.Equal(t, 1, *count.ExitCode)
	require.Equal(t, []string{"status Failed", "cromwell: Job inner.count:NA:1 exited with return code 1 which has not been declared as a valid return code."}, count.SystemLogs)

	require.Equal(t, "hello.say", say0.Name)
	require.Equal(t, time.Date(2024, 5, 1, 15, 0, 1, 100e6, time.UTC), *say0.StartTime, "times are kept in UTC")
	require.Equal(t, time.Date(2024, 5, 1, 15, 0, 2, 200e6, time.UTC), *say0.EndTime)
	require.Equal(t, 0, *say0.ExitCode)
	require.Equal(t, 137, *say1.ExitCode)
	require.Contains(t, say1.SystemLogs, "cromwell: The job was killed (137)")

	require.Equal(t, []string{"cromwell: Workflow failed", "cromwell: Job inner.count:NA:1 exited with return code 1 which has not been declared as a valid return code."},
		md.failureMessages())
}

func TestCromwellOutputs(t *testing.T) {
	t.Parallel()
	r := cromwellSpec(t)
	exec := filepath.Join(r.work, "cromwell-executions", "hello", "2c2d", "call-say", "shard-0", "execution")
	require.NoError(t, os.MkdirAll(exec, 0o750))
	write := func(p, content string) string {
		require.NoError(t, os.WriteFile(p, []byte(content), 0o640))
		return p
	}
	greeting := write(filepath.Join(exec, "50% a#b.txt"), "Hello, a\n")
	input := write(filepath.Join(r.inputs, "names.txt"), "a\nb\n")
	// An input localised as a link into the call's inputs, handed through.
	linked := filepath.Join(r.work, "cromwell-executions", "hello", "2c2d", "call-say", "inputs", "names.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(linked), 0o750))
	require.NoError(t, os.Symlink(input, linked))
	outside := write(filepath.Join(t.TempDir(), "elsewhere.txt"), "not the run's")

	md := map[string]any{"status": "Succeeded", "outputs": map[string]any{
		"hello.greetings": []any{greeting},
		"hello.names":     linked,
		"hello.count":     2,
		"hello.word":      "Hello",
		"hello.pair":      map[string]any{"left": greeting, "right": "/no/such/file"},
		"hello.elsewhere": outside,
	}}
	b, err := json.Marshal(md)
	require.NoError(t, err)
	write(cromwellMetadata(r), string(b))

	raw, err := cromwellOutputs(r, nil)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out))

	stored := filepath.Join(r.outputs, "hello", "2c2d", "call-say", "shard-0", "execution", "50% a#b.txt")
	file := out["hello.greetings"].([]any)[0].(map[string]any)
	require.Equal(t, "File", file["class"])
	require.Equal(t, "file://"+strings.NewReplacer("%", "%25", " ", "%20", "#", "%23").Replace(stored), file["location"], "locations are percent-encoded")
	require.Equal(t, "50% a#b.txt", file["basename"])
	require.EqualValues(t, len("Hello, a\n"), file["size"])
	content, err := os.ReadFile(stored)
	require.NoError(t, err)
	require.Equal(t, "Hello, a\n", string(content), "the file is linked below outputs/ under its path in cromwell-executions")

	names := out["hello.names"].(map[string]any)
	require.Equal(t, fileURL(filepath.Join(r.outputs, "hello", "2c2d", "call-say", "inputs", "names.txt")), names["location"])
	require.Equal(t, fileURL(stored), out["hello.pair"].(map[string]any)["left"].(map[string]any)["location"])

	require.EqualValues(t, 2, out["hello.count"])
	require.Equal(t, "Hello", out["hello.word"])
	require.Equal(t, "/no/such/file", out["hello.pair"].(map[string]any)["right"], "a path that names nothing stays a string")
	require.Equal(t, outside, out["hello.elsewhere"], "a file outside the run is not the run's to store")
	require.NoFileExists(t, filepath.Join(r.outputs, "elsewhere.txt"))

	// Exit 0 with a workflow that did not succeed is not a success.
	write(cromwellMetadata(r), `{"status": "Aborted", "outputs": {}}`)
	_, err = cromwellOutputs(r, nil)
	require.ErrorContains(t, err, "Aborted")
}

func TestResolveBareInputs(t *testing.T) {
	t.Parallel()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	inputs, work := filepath.Join(dir, "inputs"), filepath.Join(dir, "work")
	require.NoError(t, os.MkdirAll(filepath.Join(inputs, "data"), 0o750))
	require.NoError(t, os.MkdirAll(work, 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(inputs, "data", "x.txt"), []byte("x"), 0o640))
	host, err := os.Executable() // a file of the host, outside the run
	require.NoError(t, err)

	for _, tc := range []struct {
		name       string
		params     string
		allowLocal bool
		want       map[string]any
		errHas     string
	}{
		{name: "an attachment's name becomes its path", params: `{"wf.in": "data/x.txt", "wf.list": ["data/x.txt", "data"]}`,
			want: map[string]any{"wf.in": filepath.Join(inputs, "data", "x.txt"), "wf.list": []any{filepath.Join(inputs, "data", "x.txt"), filepath.Join(inputs, "data")}}},
		{name: "strings that name nothing stay", params: `{"wf.s": "hello", "wf.n": 3, "wf.u": "https://example.org/x.txt", "wf.missing": "/no/such/file", "wf.rel": "data/none.txt"}`,
			want: map[string]any{"wf.s": "hello", "wf.n": 3.0, "wf.u": "https://example.org/x.txt", "wf.missing": "/no/such/file", "wf.rel": "data/none.txt"}},
		{name: "a host path is refused", params: `{"wf.in": "` + host + `"}`, errHas: "local paths are disabled"},
		{name: "a relative path out of the run is refused", params: `{"wf": {"in": "../../../../../../../../` + strings.TrimPrefix(host, "/") + `"}}`, errHas: "local paths are disabled"},
		{name: "a host path is taken when allowed", params: `{"wf.in": "` + host + `"}`, allowLocal: true, want: map[string]any{"wf.in": host}},
		{name: "a host file URL is refused", params: `{"wf.in": "file://` + host + `"}`, errHas: "local paths are disabled"},
		{name: "a pattern matching host files is refused", params: `{"wf.in": "` + filepath.Dir(host) + `/*"}`, errHas: "local paths are disabled"},
		{name: "a file URL into the run is taken", params: `{"wf.in": "file://` + filepath.Join(inputs, "data", "x.txt") + `"}`,
			want: map[string]any{"wf.in": "file://" + filepath.Join(inputs, "data", "x.txt")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := resolveBareInputs([]byte(tc.params), inputs, work, tc.allowLocal)
			if tc.errHas != "" {
				require.ErrorContains(t, err, tc.errHas)
				return
			}
			require.NoError(t, err)
			var got map[string]any
			require.NoError(t, json.Unmarshal(b, &got))
			require.Equal(t, tc.want, got)
		})
	}
}

func TestCromwellPrepare(t *testing.T) {
	t.Parallel()
	f := newJob(t, "cromwell", "wdl-hello", "hello.wdl")
	r, err := New(Config{}, nil).prepare(f.job, cromwell())
	require.NoError(t, err)
	require.Equal(t, filepath.Join(f.job.Dir, "inputs", "hello.wdl"), r.workflow)
	require.FileExists(t, filepath.Join(r.inputs, "tasks", "greet.wdl"), "the import is staged where Cromwell looks for it")
	b, err := os.ReadFile(r.params)
	require.NoError(t, err)
	var params map[string]any
	require.NoError(t, json.Unmarshal(b, &params))
	require.Equal(t, map[string]any{"hello.names": filepath.Join(r.inputs, "names.txt"), "hello.greeting": "Hello"}, params,
		"the attached input file is named by its path; a plain string stays")
	_, hasOutdir := params["outdir"]
	require.False(t, hasOutdir)

	// The imports zip holds the attached WDL files, under their names.
	r.job.Attempt = 1
	require.NoError(t, cromwell().setup(r))
	zr, err := zip.OpenReader(cromwellImports(r))
	require.NoError(t, err)
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	require.ElementsMatch(t, []string{"hello.wdl", "tasks/greet.wdl"}, names, "the WDL files, no data")
}

// standInCromwell answers `--version` and `run` as Cromwell's launcher does:
// it checks the arguments, runs the "call" in cromwell-executions/ below
// its working directory, writes the metadata and exits 0, or 1 when the
// inputs ask for a failure. It also prints its working directory and
// JAVA_HOME.
const standInCromwell = `#!/bin/bash
set -eu
if [ "$1" = "--version" ]; then echo "cromwell 86"; exit 0; fi
[ "$1" = run ] || { echo "usage: cromwell run WF" >&2; exit 2; }
wf=$2; shift 2
while [ $# -gt 0 ]; do
  case $1 in
    --inputs) inputs=$2;; --imports) imports=$2;; --metadata-output) md=$2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
  shift 2
done
[ -f "$wf" ] && [ -f "$inputs" ] || { echo "missing workflow or inputs" >&2; exit 2; }
[ "$(head -c 2 "$imports")" = PK ] || { echo "--imports is not a zip file" >&2; exit 2; }
echo "cwd=$PWD java_home=${JAVA_HOME:-}"
ex=$PWD/cromwell-executions/hello/0001/call-say/execution
mkdir -p "$ex"
name=$(sed -n 's/.*"hello.name": "\(.*\)".*/\1/p' "$inputs")
if grep -q '"hello.fail": true' "$inputs"; then
  cat > "$md" <<EOF
{"status": "Failed", "outputs": {}, "calls": {"hello.say": [{"executionStatus": "Failed", "shardIndex": -1, "attempt": 1, "returnCode": 3, "commandLine": "exit 3"}]},
 "failures": [{"message": "Workflow failed", "causedBy": [{"message": "Job hello.say:NA:1 exited with return code 3 which has not been declared as a valid return code.", "causedBy": []}]}]}
EOF
  exit 1
fi
echo "Hello, $name" > "$ex/greeting.txt"
cat > "$md" <<EOF
{"status": "Succeeded", "outputs": {"hello.greeting": "$ex/greeting.txt", "hello.who": "$name"},
 "calls": {"hello.say": [{"executionStatus": "Done", "shardIndex": -1, "attempt": 1, "returnCode": 0, "commandLine": "echo Hello",
   "start": "2024-05-01T10:00:00.000Z", "end": "2024-05-01T10:00:01.000Z"}]}}
EOF
`

func TestCromwellRunThroughTheProvider(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "cromwell"), []byte(standInCromwell), 0o755))
	env := map[string]string{"PATH": bin + string(os.PathListSeparator) + os.Getenv("PATH"), "JAVA_HOME": "/opt/java"}
	p := New(Config{Getenv: func(k string) string { return env[k] }}, nil)
	engines, err := p.Engines(context.Background())
	require.NoError(t, err)
	var found bool
	for _, e := range engines {
		if e.Name == "cromwell" {
			found = true
			require.Equal(t, "86", e.Version)
			require.Equal(t, []string{"draft-2", "1.0"}, e.WorkflowTypes["WDL"])
		}
	}
	require.True(t, found, "cromwell is not detected: %+v", engines)

	wdl := "version 1.0\nworkflow hello { input { String name } }\n"
	run := func(t *testing.T, params string) (*fixture, providers.Result) {
		f := newJobFiles(t, "cromwell", map[string]string{"hello.wdl": wdl}, "hello.wdl", params)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := p.Run(ctx, f.job, f.rec)
		require.NoError(t, err, "stderr: %s", f.stderr)
		return f, res
	}

	t.Run("succeeded", func(t *testing.T) {
		f, res := run(t, `{"hello.name": "World"}`)
		require.Equal(t, 0, res.ExitCode, "stderr: %s", f.stderr)
		require.Contains(t, f.stdout.String(), "cwd="+filepath.Join(f.job.Dir, "work")+" java_home=/opt/java", "Cromwell runs in work/ with its runtime's variables")
		var out map[string]any
		require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
		require.Equal(t, "World", out["hello.who"])
		greeting := out["hello.greeting"].(map[string]any)
		require.Equal(t, fileURL(filepath.Join(f.outputs(), "hello", "0001", "call-say", "execution", "greeting.txt")), greeting["location"])
		require.Equal(t, "Hello, World\n", localFile(t, greeting["location"].(string)))
		tasks := f.rec.finalTasks()
		require.Len(t, tasks, 1)
		require.Equal(t, "hello.say:NA:1", tasks[0].ID)
		require.Equal(t, 0, *tasks[0].ExitCode)
	})
	t.Run("failed", func(t *testing.T) {
		f, res := run(t, `{"hello.name": "World", "hello.fail": true}`)
		require.Equal(t, 1, res.ExitCode)
		require.Contains(t, res.SystemLogs, "cromwell: Job hello.say:NA:1 exited with return code 3 which has not been declared as a valid return code.",
			"the run says why the workflow failed")
		tasks := f.rec.finalTasks()
		require.Len(t, tasks, 1)
		require.Equal(t, []string{"status Failed"}, tasks[0].SystemLogs)
		require.Equal(t, 3, *tasks[0].ExitCode)
	})
}

func TestLinkOrCopy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	require.NoError(t, err)
	defer root.Close()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a"), 0o640))
	require.NoError(t, linkOrCopy(root, "a.txt", "b.txt"))
	same, err := os.Stat(filepath.Join(dir, "b.txt"))
	require.NoError(t, err)
	orig, err := os.Stat(filepath.Join(dir, "a.txt"))
	require.NoError(t, err)
	require.True(t, os.SameFile(orig, same), "a link where the kernel allows one")
	require.ErrorIs(t, linkOrCopy(root, "a.txt", "b.txt"), fs.ErrExist, "an existing destination is left as it is")

	// A link a workflow planted below outputs/ leads nowhere out of the
	// run's directory: neither a link nor a copy is made through it.
	outside := t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "planted")))
	require.Error(t, linkOrCopy(root, "a.txt", "planted/victim"))
	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	require.Empty(t, entries, "a file was made through the planted link")

	// Another filesystem: no link can be made there, a copy is.
	shm, err := os.MkdirTemp("/dev/shm", "wes-link-")
	if err != nil {
		t.Skipf("SKIPPED: no /dev/shm to copy across filesystems: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	slash, err := os.OpenRoot("/")
	require.NoError(t, err)
	defer slash.Close()
	src, dst := filepath.Join(dir, "a.txt")[1:], filepath.Join(shm, "c.txt")[1:]
	require.NoError(t, linkOrCopy(slash, src, dst))
	b, err := os.ReadFile("/" + dst)
	require.NoError(t, err)
	require.Equal(t, "a", string(b))
}
