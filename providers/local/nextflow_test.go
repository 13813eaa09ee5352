package local

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/providers"
)

// Nextflow cannot be installed on the development machine: these tests need
// no binary.

func nextflowSpec(t *testing.T) *runSpec {
	t.Helper()
	dir := t.TempDir()
	r := &runSpec{
		dir: dir, inputs: filepath.Join(dir, "inputs"), work: filepath.Join(dir, "work"),
		tmp: filepath.Join(dir, "tmp"), outputs: filepath.Join(dir, "outputs"),
		params: filepath.Join(dir, "params.json"), workflow: filepath.Join(dir, "inputs", "main.nf") + "#ignored",
		engineArgs: []string{"-profile", "test"}, cores: 1,
	}
	require.NoError(t, os.MkdirAll(r.work, 0o750))
	return r
}

func TestNextflowArgv(t *testing.T) {
	t.Parallel()
	r := nextflowSpec(t)

	argv := nextflow().argv("/usr/bin/nextflow", r)
	requireNoShell(t, argv)
	require.Equal(t, "/usr/bin/nextflow", argv[0])
	run := slices.Index(argv, "run")
	require.GreaterOrEqual(t, run, 1)
	require.Equal(t, filepath.Join(r.inputs, "main.nf"), argv[run+1], "the pipeline, without its fragment, follows run")
	require.Equal(t, r.params, flagValue(t, argv, "-params-file"))
	require.Equal(t, filepath.Join(r.work, "nf-work"), flagValue(t, argv, "-work-dir"))
	require.Equal(t, filepath.Join(r.work, "trace-1.txt"), flagValue(t, argv, "-with-trace"))
	require.Equal(t, filepath.Join(r.work, "nextflow.log"), flagValue(t, argv, "-log"))
	require.Less(t, slices.Index(argv, "-log"), run, "-log is an option of nextflow, not of run")
	require.NotContains(t, argv, "-resume", "a first attempt has nothing to resume")
	require.Equal(t, []string{"-profile", "test"}, argv[len(argv)-2:])

	// A retry finds the last attempt's work directory and resumes it, with
	// a trace file of its own (Nextflow refuses to overwrite one).
	require.NoError(t, os.MkdirAll(filepath.Join(r.work, "nf-work"), 0o750))
	r.job.Attempt = 2
	argv = nextflow().argv("/usr/bin/nextflow", r)
	require.Contains(t, argv, "-resume")
	require.Equal(t, filepath.Join(r.work, "trace-2.txt"), flagValue(t, argv, "-with-trace"))
}

func TestEngineVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		engine, out, want string
	}{
		{"nextflow", "\n      N E X T F L O W\n      version 23.10.1 build 5891\n      created 12-01-2024 22:01 UTC \n      cite doi:10.1038/nbt.3820\n      http://nextflow.io\n", "23.10.1"},
		{"nextflow", "nextflow 24.04.4", "24.04.4"},
		{"cromwell", "cromwell 86\n", "86"},
		{"cromwell", "Picked up JAVA_TOOL_OPTIONS: -Xmx2g\ncromwell 87-6b4c5a1\n", "87-6b4c5a1"},
		{"cromwell", "Error: Unable to access jarfile cromwell.jar\n", "unknown"},
		{"cwltool", "/usr/bin/cwltool 3.1.20230209161050\n", "3.1.20230209161050"},
	} {
		var e engine
		for _, c := range New(Config{}, nil).engines {
			if c.name == tc.engine {
				e = c
			}
		}
		require.Equal(t, tc.want, e.version(tc.out), "%s: %q", tc.engine, tc.out)
	}
}

func TestNextflowIsGivenItsHome(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HOME": "/home/wes", "JAVA_HOME": "/opt/java", "WES_DATABASE_URL": "postgres://secret"}
	p := New(Config{Getenv: func(k string) string { return env[k] }}, nil)
	require.Equal(t, []string{"NXF_HOME=/home/wes/.nextflow", "JAVA_HOME=/opt/java"}, p.passEnv(nextflow()),
		"the launcher's jars stay where the executor's user keeps them")
	env["NXF_HOME"] = "/opt/nextflow"
	require.Equal(t, []string{"NXF_HOME=/opt/nextflow", "JAVA_HOME=/opt/java"}, p.passEnv(nextflow()))
	require.Equal(t, []string{"JAVA_HOME=/opt/java"}, p.passEnv(cromwell()))
	require.Empty(t, p.passEnv(cwltool()))
}

func TestNextflowPrepare(t *testing.T) {
	t.Parallel()
	f := newJob(t, "nextflow", "nextflow", "main.nf")
	str := func(s string) *string { return &s }
	f.job.Request.WorkflowEngineParameters = map[string]*string{"-profile": str("test")}
	p := New(Config{}, nil)

	r, err := p.prepare(f.job, nextflow())
	require.NoError(t, err)
	require.Equal(t, filepath.Join(f.job.Dir, "inputs", "main.nf"), r.workflow)
	require.Equal(t, []string{"-profile", "test"}, r.engineArgs)
	for _, d := range []string{"inputs", "work", "tmp", "outputs"} {
		require.DirExists(t, filepath.Join(f.job.Dir, d))
	}
	b, err := os.ReadFile(r.params)
	require.NoError(t, err)
	var params map[string]any
	require.NoError(t, json.Unmarshal(b, &params))
	require.Equal(t, f.outputs(), params["outdir"], "params.outdir points at outputs/")
	require.Equal(t, []any{"Hello", "Hallo"}, params["greetings"])

	f.job.Request.WorkflowEngineParameters = map[string]*string{"-profile": str("prod")}
	_, err = p.prepare(f.job, nextflow())
	require.ErrorContains(t, err, "-profile")
	require.ErrorIs(t, err, providers.ErrInvalidRequest, "a bad value is the user's to fix")
}

func TestNextflowTrace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o640))
		return p
	}

	t.Run("default fields", func(t *testing.T) {
		path := write("trace.txt", "task_id\thash\tnative_id\tname\tstatus\texit\tsubmit\tduration\trealtime\t%cpu\tpeak_rss\tpeak_vmem\trchar\twchar\n"+
			"1\t4e/a1b2c3\t12345\tSAY_HELLO (1)\tCOMPLETED\t0\t2024-01-01 10:00:00.000\t1s\t5ms\t80.0%\t3 MB\t5 MB\t60 KB\t200 B\n"+
			"2\tab/cdef12\t12346\tSAY_HELLO (2)\tFAILED\t1\t2024-01-01 10:00:00.100\t1s\t5ms\t80.0%\t3 MB\t5 MB\t60 KB\t200 B\n"+
			"3\t-\t-\tSAY_HELLO (3)\tABORTED\t-\t-\t-\t-\t-\t-\t-\t-\t-\n")
		tasks, err := nextflowTrace(dir, path)
		require.NoError(t, err)
		require.Len(t, tasks, 3)

		require.Equal(t, "1", tasks[0].ID)
		require.Equal(t, "SAY_HELLO (1)", tasks[0].Name)
		require.NotNil(t, tasks[0].ExitCode)
		require.Equal(t, 0, *tasks[0].ExitCode)
		require.Equal(t, []string{"status COMPLETED"}, tasks[0].SystemLogs)

		require.Equal(t, "2", tasks[1].ID)
		require.NotNil(t, tasks[1].ExitCode)
		require.Equal(t, 1, *tasks[1].ExitCode)
		require.Equal(t, []string{"status FAILED"}, tasks[1].SystemLogs)

		require.Equal(t, "SAY_HELLO (3)", tasks[2].Name)
		require.Nil(t, tasks[2].ExitCode, "exit \"-\" is no exit code")
	})
	t.Run("columns in another order, no task_id", func(t *testing.T) {
		path := write("trace2.txt", "name\texit\thash\n"+"ALIGN (a)\t137\t9f/0011aa\n")
		tasks, err := nextflowTrace(dir, path)
		require.NoError(t, err)
		require.Len(t, tasks, 1)
		require.Equal(t, "9f/0011aa", tasks[0].ID, "the hash identifies a task without task_id")
		require.Equal(t, "ALIGN (a)", tasks[0].Name)
		require.Equal(t, 137, *tasks[0].ExitCode)
	})
	t.Run("header only", func(t *testing.T) {
		tasks, err := nextflowTrace(dir, write("trace3.txt", "task_id\thash\tname\tstatus\texit\n"))
		require.NoError(t, err)
		require.Empty(t, tasks)
	})
	t.Run("empty", func(t *testing.T) {
		_, err := nextflowTrace(dir, write("trace4.txt", ""))
		require.Error(t, err)
	})
	t.Run("missing", func(t *testing.T) {
		_, err := nextflowTrace(dir, filepath.Join(dir, "none.txt"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("a link the workflow planted is not followed", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "shadow")
		require.NoError(t, os.WriteFile(secret, []byte("name\texit\nroot:secret\t0\n"), 0o600))
		require.NoError(t, os.Symlink(secret, filepath.Join(dir, "trace5.txt")))
		tasks, err := nextflowTrace(dir, filepath.Join(dir, "trace5.txt"))
		require.Error(t, err)
		require.Empty(t, tasks)
	})
}

func TestNextflowPublishedLinksAreStored(t *testing.T) {
	t.Parallel()
	r := nextflowSpec(t)
	task := filepath.Join(r.work, "nf-work", "ab", "cdef")
	require.NoError(t, os.MkdirAll(filepath.Join(task, "reports"), 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(task, "greeting.txt"), []byte("Hello\n"), 0o640))
	require.NoError(t, os.WriteFile(filepath.Join(task, "reports", "r.html"), []byte("<p>"), 0o640))
	outside := filepath.Join(t.TempDir(), "ref.fa")
	require.NoError(t, os.WriteFile(outside, []byte(">chr1\n"), 0o640))
	require.NoError(t, os.MkdirAll(filepath.Join(r.outputs, "results"), 0o750))
	// publishDir's default mode: links to the task's files and directories.
	require.NoError(t, os.Symlink(filepath.Join(task, "greeting.txt"), filepath.Join(r.outputs, "results", "greeting.txt")))
	require.NoError(t, os.Symlink(filepath.Join(task, "reports"), filepath.Join(r.outputs, "results", "reports")))
	require.NoError(t, os.Symlink(outside, filepath.Join(r.outputs, "results", "ref.fa")))
	require.NoError(t, os.Symlink(r.outputs, filepath.Join(r.outputs, "results", "loop")))

	raw, err := dirOutputs(r, nil)
	require.NoError(t, err)
	var out map[string]map[string]any
	require.NoError(t, json.Unmarshal(raw, &out))
	for _, rel := range []string{"results/greeting.txt", "results/reports/r.html"} {
		p := filepath.Join(r.outputs, filepath.FromSlash(rel))
		fi, err := os.Lstat(p)
		require.NoError(t, err)
		require.True(t, fi.Mode().IsRegular(), "%s is still a link: the executor stores regular files only", rel)
		require.Equal(t, fileURL(p), out[rel]["location"])
	}
	require.EqualValues(t, len("Hello\n"), out["results/greeting.txt"]["size"])
	fi, err := os.Lstat(filepath.Join(r.outputs, "results", "ref.fa"))
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "a link out of the run is not the run's to store")
	fi, err = os.Lstat(filepath.Join(r.outputs, "results", "loop"))
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "a link to a directory that holds it stays a link")
}

func TestOutdirIsBelowOutputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inputs, outputs := filepath.Join(dir, "inputs"), filepath.Join(dir, "outputs")
	for _, tc := range []struct {
		params, want, errHas string
	}{
		{params: `{}`, want: outputs},
		{params: `{"outdir": "results"}`, want: filepath.Join(outputs, "results")},
		{params: `{"outdir": "/data/results"}`, errHas: "give a relative name"},
		{params: `{"outdir": "../work"}`, errHas: "give a relative name"},
		{params: `{"outdir": 3}`, errHas: "must be a string"},
	} {
		b, err := resolveInputs(json.RawMessage(tc.params), inputs, false, false, "outdir", outputs)
		if tc.errHas != "" {
			require.ErrorContains(t, err, tc.errHas, tc.params)
			continue
		}
		require.NoError(t, err, tc.params)
		var got map[string]any
		require.NoError(t, json.Unmarshal(b, &got))
		require.Equal(t, tc.want, got["outdir"], tc.params)
	}
}
