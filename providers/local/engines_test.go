package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
)

// These tests run the real engines, one at a time: they are CPU heavy and
// the CI machine has two cores.

// requireNoShell fails when argv would run through a shell.
func requireNoShell(t *testing.T, argv []string) {
	t.Helper()
	require.NotEmpty(t, argv)
	require.NotContains(t, []string{"sh", "bash", "dash", "zsh"}, filepath.Base(argv[0]), "argv runs a shell: %q", argv)
	require.NotContains(t, argv, "-c", "argv runs a shell: %q", argv)
}

// flagValue returns the argument after flag in argv.
func flagValue(t *testing.T, argv []string, flag string) string {
	t.Helper()
	i := slices.Index(argv, flag)
	require.True(t, i >= 0 && i+1 < len(argv), "%s with a value is not in %q", flag, argv)
	return argv[i+1]
}

func TestRunCwltoolHello(t *testing.T) {
	requireEngine(t, "cwltool")
	f := newJob(t, "cwltool", "cwl-hello", "hello.cwl")

	res, err := f.run(t)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)
	require.Equal(t, f.outputs(), res.OutputDir)

	var out struct{ Greeting fileOutput }
	require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
	require.Equal(t, "File", out.Greeting.Class)
	require.Equal(t, "file://"+f.outputs()+"/greeting.txt", out.Greeting.Location)
	require.Contains(t, localFile(t, out.Greeting.Location), "Hello from WES")

	argv := f.rec.argv(t)
	requireNoShell(t, argv)
	require.Equal(t, "cwltool", filepath.Base(argv[0]))
	require.Equal(t, f.outputs(), flagValue(t, argv, "--outdir"))
	require.Equal(t, []string{filepath.Join(f.job.Dir, "inputs", "hello.cwl"), filepath.Join(f.job.Dir, "params.json")}, argv[len(argv)-2:])

	tasks := f.rec.finalTasks()
	require.NotEmpty(t, tasks, "no task reported; stderr:\n%s", f.stderr)
	for _, task := range tasks {
		require.NotNil(t, task.StartTime, "task %+v", task)
		require.NotNil(t, task.EndTime, "task %+v never ended", task)
		require.NotNil(t, task.ExitCode, "task %+v", task)
		require.Equal(t, 0, *task.ExitCode, "task %+v", task)
		require.False(t, task.EndTime.Before(*task.StartTime))
	}
	require.Equal(t, "hello.cwl", tasks[0].Name)
	require.NotEmpty(t, tasks[0].Cmd)
	require.Equal(t, "echo", tasks[0].Cmd[0])

	// The engine's output went to the job's writers as well.
	require.Contains(t, f.stdout.String(), "greeting.txt")
	require.Contains(t, f.stderr.String(), "Final process status is success")
}

func TestRunCwltoolWorkflow(t *testing.T) {
	requireEngine(t, "cwltool")
	f := newJob(t, "cwltool", "cwl-workflow", "count-lines.cwl")

	res, err := f.run(t)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)

	// The relative data/*.txt locations were made absolute under inputs/.
	params, err := os.ReadFile(filepath.Join(f.job.Dir, "params.json"))
	require.NoError(t, err)
	require.Contains(t, string(params), filepath.Join(f.job.Dir, "inputs", "data", "one.txt"))

	var out struct {
		Counts []fileOutput
		Total  fileOutput
	}
	require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
	require.Equal(t, "file://"+f.outputs()+"/total.txt", out.Total.Location)
	require.Equal(t, "5", strings.TrimSpace(localFile(t, out.Total.Location)))
	require.Len(t, out.Counts, 2)
	for _, c := range out.Counts {
		require.True(t, strings.HasPrefix(c.Location, "file://"+f.outputs()+"/"), "count %q is not under outputs/", c.Location)
		require.NotEmpty(t, localFile(t, c.Location))
	}

	// The scattered step ran twice; the sub-workflow's step once.
	byName := map[string]models.TaskLog{}
	for _, task := range f.rec.finalTasks() {
		byName[task.Name] = task
	}
	for _, name := range []string{"count", "count_2", "sum"} {
		task, ok := byName[name]
		require.True(t, ok, "task %s not reported; got %+v", name, byName)
		require.NotNil(t, task.EndTime, "task %s never ended", name)
		require.NotNil(t, task.ExitCode)
		require.Equal(t, 0, *task.ExitCode)
	}
}

func TestRunCwltoolFailure(t *testing.T) {
	requireEngine(t, "cwltool")
	f := newJobFiles(t, "cwltool", map[string]string{"fail.cwl": `cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c, "exit 3"]
inputs: []
outputs: []
`}, "fail.cwl", `{}`)

	res, err := f.run(t)
	require.NoError(t, err, "a failed workflow is not a system error")
	require.NotEqual(t, 0, res.ExitCode)
	// cwltool exits 1 for a permanentFail, whatever the tool's own code.
	require.Equal(t, 1, res.ExitCode)
	require.JSONEq(t, `{}`, string(res.Outputs))

	tasks := f.rec.finalTasks()
	require.Len(t, tasks, 1, "tasks: %+v", tasks)
	require.NotNil(t, tasks[0].ExitCode)
	require.NotEqual(t, 0, *tasks[0].ExitCode)
	require.Contains(t, tasks[0].SystemLogs, "completed permanentFail")
}

func TestRunEngineParameters(t *testing.T) {
	requireEngine(t, "cwltool")
	str := func(s string) *string { return &s }

	t.Run("unknown key refused", func(t *testing.T) {
		f := newJob(t, "cwltool", "cwl-hello", "hello.cwl")
		f.job.Request.WorkflowEngineParameters = map[string]*string{"--outdir": str("/tmp/elsewhere")}
		_, err := f.run(t)
		require.ErrorContains(t, err, "--outdir")
		f.rec.mu.Lock()
		defer f.rec.mu.Unlock()
		require.Empty(t, f.rec.started, "the engine must not start")
	})
	t.Run("bad enum value refused", func(t *testing.T) {
		f := newJob(t, "cwltool", "cwl-hello", "hello.cwl")
		f.job.Request.WorkflowEngineParameters = map[string]*string{"--on-error": str("bogus")}
		_, err := f.run(t)
		require.ErrorContains(t, err, "--on-error")
		require.ErrorContains(t, err, "bogus")
	})
	t.Run("flag given as null accepted", func(t *testing.T) {
		f := newJob(t, "cwltool", "cwl-hello", "hello.cwl")
		f.job.Request.WorkflowEngineParameters = map[string]*string{"--parallel": nil}
		res, err := f.run(t)
		require.NoError(t, err)
		require.Equal(t, 0, res.ExitCode)
		argv := f.rec.argv(t)
		require.Contains(t, argv, "--parallel")
		// Engine parameters come before the workflow and its inputs.
		require.Less(t, slices.Index(argv, "--parallel"), len(argv)-2)
	})
}

func TestRunToilHello(t *testing.T) {
	requireEngine(t, "toil-cwl-runner")
	f := newJob(t, "toil", "cwl-hello", "hello.cwl")

	res, err := f.run(t)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)

	var out struct{ Greeting fileOutput }
	require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
	require.True(t, strings.HasPrefix(out.Greeting.Location, "file://"+f.outputs()+"/"), "greeting %q is not under outputs/", out.Greeting.Location)
	require.Contains(t, localFile(t, out.Greeting.Location), "Hello from WES")

	argv := f.rec.argv(t)
	requireNoShell(t, argv)
	require.Equal(t, "file:"+filepath.Join(f.job.Dir, "work", "jobstore"), flagValue(t, argv, "--jobStore"))
	require.Equal(t, f.outputs(), flagValue(t, argv, "--outdir"))
	require.NotContains(t, argv, "--restart", "a first attempt has no job store to restart")
}

func TestRunSnakemake(t *testing.T) {
	requireEngine(t, "snakemake")
	f := newJob(t, "snakemake", "snakemake", "Snakefile")

	res, err := f.run(t)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)

	var out map[string]fileOutput
	require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
	all, ok := out["results/all.txt"]
	require.True(t, ok, "results/all.txt not in outputs %s", res.Outputs)
	require.Equal(t, "file://"+f.outputs()+"/results/all.txt", all.Location)
	content := localFile(t, all.Location)
	for _, name := range []string{"Ada", "Grace", "Barbara"} {
		require.Contains(t, content, "Hi, "+name+"!")
	}
	require.Contains(t, out, "results/greet/Ada.txt")

	argv := f.rec.argv(t)
	requireNoShell(t, argv)
	require.Equal(t, filepath.Join(f.job.Dir, "inputs", "Snakefile"), flagValue(t, argv, "--snakefile"))
	require.Equal(t, filepath.Join(f.job.Dir, "params.json"), flagValue(t, argv, "--configfile"))

	counts := map[string]int{}
	for _, task := range f.rec.finalTasks() {
		require.NotNil(t, task.EndTime, "task %+v never ended", task)
		require.NotNil(t, task.ExitCode)
		require.Equal(t, 0, *task.ExitCode, "task %+v", task)
		counts[task.Name]++
	}
	require.Equal(t, 3, counts["greet"], "tasks by rule: %v", counts)
	require.Equal(t, 1, counts["gather"], "tasks by rule: %v", counts)
}

// The executor stages attachments into inputs/ just before it calls Run;
// they are not files the workflow produced.
func TestRunSnakemakeOutputsExcludeAttachments(t *testing.T) {
	requireEngine(t, "snakemake")
	f := newJob(t, "snakemake", "snakemake", "Snakefile")

	res, err := f.run(t)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)

	var out map[string]fileOutput
	require.NoError(t, json.Unmarshal(res.Outputs, &out))
	var keys []string
	for k := range out {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	require.Equal(t, []string{"results/all.txt", "results/greet/Ada.txt", "results/greet/Barbara.txt", "results/greet/Grace.txt"}, keys,
		"outputs must be what the workflow made, not the staged attachments")
}

// A workflow that plants a link below outputs/ (outputs/a -> a directory
// of the host) does not make root put its files there when the outputs are
// collected.
func TestRunSnakemakeOutputsFollowNoPlantedLink(t *testing.T) {
	requireEngine(t, "snakemake")
	victim := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(victim, "cron"), []byte("original\n"), 0o644))
	f := newJobFiles(t, "snakemake", map[string]string{"Snakefile": `rule all:
    output: "a/cron"
    shell: "echo 'chosen by the workflow' > {output}; ln -s ` + victim + ` ../outputs/a"
`}, "Snakefile", "{}")
	res, err := f.run(t)
	require.ErrorContains(t, err, "escapes", "the outputs cannot be collected through the link")
	_ = res
	got, err := os.ReadFile(filepath.Join(victim, "cron"))
	require.NoError(t, err)
	require.Equal(t, "original\n", string(got), "root replaced a host file through the planted link")
}

// With an engine user, the engine and the tools it runs are that user: a
// file only the executor's user may read (its NATS credentials) is out of
// a workflow's reach. The test runs as root, as CI does.
func TestEngineRunsAsTheEngineUser(t *testing.T) {
	requireEngine(t, "cwltool")
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	secret := filepath.Join(t.TempDir(), "nats.creds")
	require.NoError(t, os.WriteFile(secret, []byte("SECRET-NKEY\n"), 0o600))
	f := newJobFiles(t, "cwltool", map[string]string{"peek.cwl": peekTool(secret)}, "peek.cwl", "{}")
	// The engine's user passes through the test's directories to the run's.
	letEngineUsersThrough(t, filepath.Dir(f.job.Dir))
	p := New(Config{CancelGrace: testGrace, PATH: os.Getenv("PATH"), EngineUser: &syscall.Credential{Uid: 65534, Gid: 65534}}, nil)
	p.detect(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := p.Run(ctx, f.job, f.rec)
	require.NoError(t, err, "stderr:\n%s", f.stderr)
	require.Equal(t, 0, res.ExitCode, "stderr:\n%s", f.stderr)
	var out struct{ Out fileOutput }
	require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
	got := localFile(t, out.Out.Location)
	require.Equal(t, "65534\nunreadable\n", got, "the tool ran as the engine user and could not read the secret")
	require.NotContains(t, got, "SECRET")
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(f.outputs(), &st))
	require.Zero(t, st.Uid, "the run's directory is root's again before its outputs are read")
}

// peekTool is a CWL tool that prints its user id, then the file at path,
// or "unreadable".
func peekTool(path string) string {
	return `cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c]
arguments: ['id -u; cat ` + path + ` 2>/dev/null || echo unreadable']
inputs: []
outputs:
  out: {type: stdout}
stdout: out.txt
`
}

// With WES_ENGINE_UIDS each run's engine is a user of its own, and a
// workflow cannot read what another run, running beside it, keeps in its
// directory; with one WES_ENGINE_USER for every run it can (the control).
func TestRunsOfTheirOwnUsersCannotReachEachOther(t *testing.T) {
	requireEngine(t, "cwltool")
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	pool, err := NewUIDPool(200100, 200109)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // what the second run reads of the first's
	}{
		{"one user for every run", Config{EngineUser: &syscall.Credential{Uid: 65534, Gid: 65534}}, "A-SECRET"},
		{"a user for each run", Config{EngineUIDs: pool}, "unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.CancelGrace, tc.cfg.PATH = testGrace, os.Getenv("PATH")
			p := New(tc.cfg, nil)
			p.detect(context.Background())
			a := newJobFiles(t, "cwltool", map[string]string{"hold.cwl": `cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c]
arguments: ['echo A-SECRET > secret.txt; sleep 120']
inputs: []
outputs: []
`}, "hold.cwl", "{}")
			// The engines' users pass through the test's directories to
			// the runs'.
			letEngineUsersThrough(t, filepath.Dir(a.job.Dir))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ctxA, stopA := context.WithCancel(ctx)
			doneA := make(chan error, 1)
			go func() {
				_, err := p.Run(ctxA, a.job, a.rec)
				doneA <- err
			}()
			defer func() { stopA(); <-doneA }()
			var secret string
			require.Eventually(t, func() bool {
				_ = filepath.WalkDir(a.job.Dir, func(path string, d fs.DirEntry, err error) error {
					if err == nil && d.Name() == "secret.txt" {
						secret = path
					}
					return nil
				})
				return secret != ""
			}, time.Minute, 100*time.Millisecond, "the first run wrote its secret; stderr:\n%s", a.stderr)

			b := newJobFiles(t, "cwltool", map[string]string{"peek.cwl": peekTool(secret)}, "peek.cwl", "{}")
			letEngineUsersThrough(t, filepath.Dir(b.job.Dir))
			res, err := p.Run(ctx, b.job, b.rec)
			require.NoError(t, err, "stderr:\n%s", b.stderr)
			require.Equal(t, 0, res.ExitCode, "stderr:\n%s", b.stderr)
			var out struct{ Out fileOutput }
			require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
			got := strings.Split(strings.TrimSpace(localFile(t, out.Out.Location)), "\n")
			require.Len(t, got, 2, "%q", got)
			require.Equal(t, tc.want, got[1])

			var st syscall.Stat_t
			require.NoError(t, syscall.Stat(secret, &st))
			require.NotZero(t, st.Uid, "the first run's engine was not root")
			if tc.cfg.EngineUIDs != nil {
				require.NotEqual(t, strconv.Itoa(int(st.Uid)), got[0], "the runs ran as users of their own")
				require.GreaterOrEqual(t, st.Uid, uint32(200100))
			}
		})
	}
}

// However a run of an id of its own ends (here a cancel), its directory is
// root's again and no process of its id is left, a daemon that escaped the
// marker and the process group included, before the id goes to the next
// run.
func TestARunsIDIsReclaimedWhenItIsCanceled(t *testing.T) {
	requireEngine(t, "cwltool")
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	const id = 200700
	pool, err := NewUIDPool(id, id) // one id: the next run can only have it
	require.NoError(t, err)
	p := New(Config{CancelGrace: testGrace, PATH: os.Getenv("PATH"), EngineUIDs: pool}, nil)
	p.detect(context.Background())
	f := newJobFiles(t, "cwltool", map[string]string{"daemon.cwl": `cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c]
arguments: ['env -i setsid sleep 300 < /dev/null > /dev/null 2>&1 & echo started > started.txt; sleep 300']
inputs: []
outputs: []
`}, "daemon.cwl", "{}")
	letEngineUsersThrough(t, filepath.Dir(f.job.Dir))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(runCtx, f.job, f.rec)
		done <- err
	}()
	require.Eventually(t, func() bool {
		found := false
		_ = filepath.WalkDir(f.job.Dir, func(_ string, d fs.DirEntry, err error) error {
			found = found || err == nil && d.Name() == "started.txt"
			return nil
		})
		return found
	}, time.Minute, 100*time.Millisecond, "stderr:\n%s", f.stderr)
	require.NotZero(t, liveProcessesOf(t, id))
	stop()
	require.ErrorIs(t, <-done, context.Canceled)

	require.Zero(t, liveProcessesOf(t, id), "a process of the run's id outlived it")
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(f.job.Dir, &st))
	require.Zero(t, st.Uid, "the run's directory is root's again")
	cred, release, err := pool.acquire()
	require.NoError(t, err, "the id is free again")
	require.EqualValues(t, id, cred.Uid)
	release()
}

// Engines run under an id no account holds (WES_ENGINE_UIDS): no passwd
// entry, only HOME in the run's directory.
func TestEnginesRunAsAnIDWithoutAnAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	pool, err := NewUIDPool(200200, 200209)
	require.NoError(t, err)
	p := New(Config{CancelGrace: testGrace, PATH: os.Getenv("PATH"), EngineUIDs: pool}, nil)
	p.detect(context.Background())
	for _, tc := range []struct {
		bin, engine, example, workflow, output, want string
	}{
		{"toil-cwl-runner", "toil", "cwl-hello", "hello.cwl", "greeting", "Hello from WES"},
		{"snakemake", "snakemake", "snakemake", "Snakefile", "results/all.txt", "Hi, Ada!"},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			requireEngine(t, tc.bin)
			f := newJob(t, tc.engine, tc.example, tc.workflow)
			letEngineUsersThrough(t, filepath.Dir(f.job.Dir))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := p.Run(ctx, f.job, f.rec)
			require.NoError(t, err, "stderr:\n%s", f.stderr)
			require.Equal(t, 0, res.ExitCode, "stderr:\n%s", f.stderr)
			var out map[string]fileOutput
			require.NoError(t, json.Unmarshal(res.Outputs, &out), "outputs: %s", res.Outputs)
			require.Contains(t, localFile(t, out[tc.output].Location), tc.want)
		})
	}
}

// chownTree follows no link out of the run's directory: a process that
// swaps a directory of the run for a link to another (here the test
// itself, as root, racing it) does not make root give or take back what
// the link names.
func TestChownTreeFollowsNoLinkOut(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: changing owners takes root; .ci/run runs as root")
	}
	base := t.TempDir()
	run, victim := filepath.Join(base, "run"), filepath.Join(base, "victim")
	require.NoError(t, os.MkdirAll(filepath.Join(run, "inputs"), 0o700))
	require.NoError(t, os.MkdirAll(victim, 0o700))
	for i := range 50 {
		require.NoError(t, os.WriteFile(filepath.Join(run, "inputs", fmt.Sprintf("f%02d", i)), nil, 0o600))
	}
	secret := filepath.Join(victim, "f00")
	require.NoError(t, os.WriteFile(secret, []byte("x"), 0o600))
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		in, aside := filepath.Join(run, "inputs"), filepath.Join(run, "aside")
		for !stop.Load() {
			if os.Rename(in, aside) == nil {
				_ = os.Symlink(victim, in)
				_ = os.Remove(in)
				_ = os.Rename(aside, in)
			}
		}
	}()
	defer func() { stop.Store(true); <-done }()
	for i := range 2000 {
		_ = chownTree(run, 65534, 65534, i%2 == 1)
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(secret, &st))
		require.Zero(t, st.Uid, "after %d tries, %s (outside the run's directory) changed owner", i+1, secret)
	}
}
