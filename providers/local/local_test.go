package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// testGrace is the CancelGrace of the provider the engine tests share.
const testGrace = 5 * time.Second

// sharedProvider is built once for the package: detecting the engines runs
// each of them (Toil takes seconds to print its version).
var sharedProvider = sync.OnceValue(func() *Provider {
	p := New(Config{CancelGrace: testGrace}, nil)
	p.detect(context.Background())
	return p
})

// requireEngine skips the test, loudly, when bin is not on PATH.
func requireEngine(t *testing.T, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("SKIPPED: %s not installed; .ci/run installs it", bin)
	}
}

// syncBuffer is an io.Writer that can be read while an engine writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorder is a providers.Reporter that keeps what it hears.
type recorder struct {
	mu      sync.Mutex
	started [][]string
	tasks   []models.TaskLog
}

func (r *recorder) Started(cmd []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, append([]string(nil), cmd...))
}

func (r *recorder) Task(t models.TaskLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks = append(r.tasks, t)
}

// argv returns the only argv Started was called with.
func (r *recorder) argv(t *testing.T) []string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Len(t, r.started, 1, "Started must be called exactly once")
	return r.started[0]
}

// finalTasks returns the last update of each task, by ID, in first-seen order.
func (r *recorder) finalTasks() []models.TaskLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	var order []string
	last := map[string]models.TaskLog{}
	for _, t := range r.tasks {
		if _, ok := last[t.ID]; !ok {
			order = append(order, t.ID)
		}
		last[t.ID] = t
	}
	out := make([]models.TaskLog, 0, len(order))
	for _, id := range order {
		out = append(out, last[id])
	}
	return out
}

// fixture is one job ready to hand to the provider, and what it reports.
type fixture struct {
	job            providers.Job
	rec            *recorder
	stdout, stderr *syncBuffer
}

// outputs is the run's outputs/ directory.
func (f *fixture) outputs() string { return filepath.Join(f.job.Dir, "outputs") }

// marker is what the provider puts in the environment of the run's processes.
func (f *fixture) marker() string { return markerOf(f.job) }

func markerOf(j providers.Job) string { return j.RunID + "." + strconv.Itoa(j.Attempt) }

func randomID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// newJob stages ../../examples/<example> as the executor stages
// attachments (into <dir>/inputs) and returns a job for engine with the
// example's params.json as workflow_params.
func newJob(t *testing.T, engine, example, workflowURL string) *fixture {
	t.Helper()
	src := filepath.Join("..", "..", "examples", example)
	files := map[string]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	require.NoError(t, err)
	params, ok := files["params.json"]
	if !ok {
		params = "{}"
	}
	return newJobFiles(t, engine, files, workflowURL, params)
}

// newJobFiles stages files (name → content) into <dir>/inputs and returns a
// job for engine.
func newJobFiles(t *testing.T, engine string, files map[string]string, workflowURL, params string) *fixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	var inputs []string
	for name, content := range files {
		inputs = append(inputs, name)
		p := filepath.Join(dir, "inputs", filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o750))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o640))
	}
	f := &fixture{rec: &recorder{}, stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	f.job = providers.Job{
		RunID: randomID(t), Attempt: 1, Engine: engine, Dir: dir, Inputs: inputs,
		Request: models.RunRequest{
			WorkflowURL:    workflowURL,
			WorkflowParams: json.RawMessage(params),
			WorkflowEngine: engine,
		},
		Stdout: f.stdout, Stderr: f.stderr,
	}
	return f
}

// run runs the fixture's job on the shared provider, with a deadline, and
// logs the engine's output when the test fails.
func (f *fixture) run(t *testing.T) (providers.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine stdout:\n%s", f.stdout)
			t.Logf("engine stderr:\n%s", f.stderr)
		}
	})
	p := sharedProvider()
	start := time.Now()
	res, err := p.Run(ctx, f.job, f.rec)
	t.Logf("%s ran for %s", f.job.Engine, time.Since(start).Round(time.Millisecond))
	return res, err
}

// fileOutput is the part of a CWL File object the tests look at.
type fileOutput struct {
	Class    string `json:"class"`
	Location string `json:"location"`
	Basename string `json:"basename"`
}

// localFile turns a file:// location into a path and reads the file.
func localFile(t *testing.T, location string) string {
	t.Helper()
	require.True(t, strings.HasPrefix(location, "file:///"), "location %q is not a local file URL", location)
	b, err := os.ReadFile(strings.TrimPrefix(location, "file://"))
	require.NoError(t, err)
	return string(b)
}

func TestEnginesListsInstalledEngines(t *testing.T) {
	t.Parallel()
	engines, err := sharedProvider().Engines(context.Background())
	require.NoError(t, err)
	byName := map[string]providers.Engine{}
	for _, e := range engines {
		byName[e.Name] = e
	}

	cwl := map[string][]string{"CWL": {"v1.0", "v1.1", "v1.2"}}
	for _, tc := range []struct {
		name, bin string
		types     map[string][]string
		param     string
	}{
		{"cwltool", "cwltool", cwl, "--parallel"},
		{"toil", "toil-cwl-runner", cwl, "--retryCount"},
		{"snakemake", "snakemake", nil, "--keep-going"}, // by its version: TestSnakemakeTypes
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireEngine(t, tc.bin)
			e, ok := byName[tc.name]
			require.True(t, ok, "engine %s is installed but not listed: %+v", tc.name, engines)
			require.NotEmpty(t, e.Version)
			require.NotEqual(t, "unknown", e.Version)
			if tc.types != nil {
				require.Equal(t, tc.types, e.WorkflowTypes)
			} else {
				require.Equal(t, snakemake().typesFor(e.Version), e.WorkflowTypes)
			}
			var names []string
			for _, p := range e.Parameters {
				names = append(names, p.Name)
			}
			require.Contains(t, names, tc.param)

			// The version is the engine's own, as it prints it on stdout:
			// Toil prints cwltool's version in a warning on stderr first.
			out, err := exec.Command(tc.bin, "--version").Output()
			require.NoError(t, err)
			require.Contains(t, string(out), e.Version)
		})
	}

	t.Run("nextflow", func(t *testing.T) {
		if _, err := exec.LookPath("nextflow"); err == nil {
			require.Contains(t, byName, "nextflow", "nextflow is installed but not listed")
			return
		}
		require.NotContains(t, byName, "nextflow", "nextflow is not installed but listed")
	})
}

func TestResolveWorkflow(t *testing.T) {
	t.Parallel()
	run := t.TempDir()
	inputs := filepath.Join(run, "inputs")
	for _, f := range []string{"inputs/hello.cwl", "inputs/sub/wf.cwl", "escape.cwl"} {
		p := filepath.Join(run, f)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o750))
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o640))
	}

	for _, tc := range []struct {
		name       string
		raw        string
		allowLocal bool
		want       string // empty: an error is expected
		errHas     string
	}{
		{name: "attachment", raw: "hello.cwl", want: inputs + "/hello.cwl"},
		{name: "attachment in a folder", raw: "sub/wf.cwl", want: inputs + "/sub/wf.cwl"},
		{name: "fragment kept", raw: "sub/wf.cwl#main", want: inputs + "/sub/wf.cwl#main"},
		{name: "dot segments inside inputs", raw: "sub/../hello.cwl", want: inputs + "/hello.cwl"},
		{name: "escape refused", raw: "../escape.cwl", errHas: "outside"},
		{name: "escape through a folder refused", raw: "sub/../../escape.cwl", errHas: "outside"},
		{name: "escape refused even when local allowed", raw: "../escape.cwl", allowLocal: true, errHas: "outside"},
		{name: "missing attachment", raw: "nope.cwl", errHas: "no staged attachment"},
		{name: "file URL refused", raw: "file://" + run + "/escape.cwl", errHas: "local workflows are disabled"},
		{name: "file URL allowed", raw: "file://" + run + "/escape.cwl", allowLocal: true, want: run + "/escape.cwl"},
		{name: "file URL allowed, fragment kept", raw: "file://" + run + "/escape.cwl#main", allowLocal: true, want: run + "/escape.cwl#main"},
		{name: "absolute path refused", raw: run + "/escape.cwl", errHas: "local workflows are disabled"},
		{name: "absolute path allowed", raw: run + "/escape.cwl", allowLocal: true, want: run + "/escape.cwl"},
		{name: "https passed through", raw: "https://example.org/wf.cwl#main", want: "https://example.org/wf.cwl#main"},
		{name: "http passed through", raw: "http://example.org/wf.cwl", want: "http://example.org/wf.cwl"},
		{name: "upper-case scheme passed through", raw: "HTTPS://example.org/wf.cwl", want: "HTTPS://example.org/wf.cwl"},
		{name: "ftp refused", raw: "ftp://example.org/wf.cwl", errHas: `scheme "ftp"`},
		{name: "s3 refused", raw: "s3://bucket/wf.cwl", errHas: `scheme "s3"`},
		{name: "unparsable", raw: "%zz", errHas: "workflow_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolveWorkflow(tc.raw, inputs, tc.allowLocal)
			if tc.want == "" {
				require.Error(t, err, "resolved to %q", got)
				require.ErrorContains(t, err, tc.errHas)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestResolveInputs(t *testing.T) {
	t.Parallel()
	const inputs, outputs = "/runs/r1/inputs", "/runs/r1/outputs"

	for _, tc := range []struct {
		name        string
		params      string
		allowLocal  bool
		salad       bool // a CWL engine's params
		outdirParam string
		want        string // JSON; empty: an error is expected
		errHas      string
	}{
		{name: "empty params", params: "", want: `{}`},
		{
			name:   "relative File location made absolute",
			params: `{"f": {"class": "File", "location": "data/one.txt"}}`,
			want:   `{"f": {"class": "File", "location": "/runs/r1/inputs/data/one.txt"}}`,
		},
		{
			name:   "relative path member too",
			params: `{"f": {"class": "File", "path": "one.txt"}}`,
			want:   `{"f": {"class": "File", "path": "/runs/r1/inputs/one.txt"}}`,
		},
		{
			name:   "Directory, in an array, with secondaryFiles",
			params: `{"fs": [{"class": "Directory", "location": "ref"}, {"class": "File", "location": "a.bam", "secondaryFiles": [{"class": "File", "location": "a.bai"}]}]}`,
			want:   `{"fs": [{"class": "Directory", "location": "/runs/r1/inputs/ref"}, {"class": "File", "location": "/runs/r1/inputs/a.bam", "secondaryFiles": [{"class": "File", "location": "/runs/r1/inputs/a.bai"}]}]}`,
		},
		{
			name:   "objects that are not File or Directory are left alone",
			params: `{"x": {"location": "data/one.txt"}, "n": 3, "s": "data/one.txt"}`,
			want:   `{"x": {"location": "data/one.txt"}, "n": 3, "s": "data/one.txt"}`,
		},
		{name: "escape refused", params: `{"f": {"class": "File", "location": "../../etc/passwd"}}`, errHas: "outside"},
		{name: "escape refused even when local allowed", params: `{"f": {"class": "File", "location": "../x"}}`, allowLocal: true, errHas: "outside"},
		{name: "file URL refused", params: `{"f": {"class": "File", "location": "file:///etc/passwd"}}`, errHas: "local paths are disabled"},
		{name: "absolute path refused", params: `{"f": {"class": "File", "path": "/etc/passwd"}}`, errHas: "local paths are disabled"},
		{
			name:       "file URL allowed",
			params:     `{"f": {"class": "File", "location": "file:///data/x.txt"}}`,
			allowLocal: true,
			want:       `{"f": {"class": "File", "location": "file:///data/x.txt"}}`,
		},
		{
			name:       "absolute path allowed",
			params:     `{"f": {"class": "File", "location": "/data/x.txt"}}`,
			allowLocal: true,
			want:       `{"f": {"class": "File", "location": "/data/x.txt"}}`,
		},
		{
			name:   "http and https passed through",
			params: `{"a": {"class": "File", "location": "https://example.org/a.txt"}, "b": {"class": "File", "location": "http://example.org/b.txt"}}`,
			want:   `{"a": {"class": "File", "location": "https://example.org/a.txt"}, "b": {"class": "File", "location": "http://example.org/b.txt"}}`,
		},
		{name: "$include refused", params: `{"msg": {"$include": "/etc/hostname"}}`, salad: true, errHas: `input key "$include": schema-salad directives`},
		{name: "$import in an array refused", params: `{"fs": [{"$import": "file:///etc/x.yml"}]}`, salad: true, errHas: `"$import"`},
		{name: "$schemas refused", params: `{"$schemas": ["/etc/x.owl"]}`, salad: true, errHas: `"$schemas"`},
		{
			name:   "$namespaces kept",
			params: `{"$namespaces": {"edam": "http://edamontology.org/"}, "f": {"class": "File", "location": "a.txt", "format": "edam:format_1929"}}`,
			salad:  true,
			want:   `{"$namespaces": {"edam": "http://edamontology.org/"}, "f": {"class": "File", "location": "/runs/r1/inputs/a.txt", "format": "edam:format_1929"}}`,
		},
		{name: "$include allowed with local paths", params: `{"msg": {"$include": "/data/x.txt"}}`, salad: true, allowLocal: true, want: `{"msg": {"$include": "/data/x.txt"}}`},
		{name: "$ keys of a snakemake config left alone", params: `{"$price": "3"}`, want: `{"$price": "3"}`},
		{name: "unknown scheme refused", params: `{"f": {"class": "File", "location": "s3://bucket/a.txt"}}`, errHas: `scheme "s3"`},
		{name: "not JSON", params: `{"f": `, errHas: "workflow_params"},
		{
			name:        "outdir param injected when absent",
			params:      `{"greetings": ["Hello"]}`,
			outdirParam: "outdir",
			want:        `{"greetings": ["Hello"], "outdir": "/runs/r1/outputs"}`,
		},
		{
			name:        "outdir param given is taken below outputs",
			params:      `{"outdir": "elsewhere"}`,
			outdirParam: "outdir",
			want:        `{"outdir": "/runs/r1/outputs/elsewhere"}`,
		},
		{
			name:        "outdir param given as null is outputs",
			params:      `{"outdir": null}`,
			outdirParam: "outdir",
			want:        `{"outdir": "/runs/r1/outputs"}`,
		},
		{name: "no outdir param, nothing injected", params: `{}`, want: `{}`},
		{name: "params that are not an object", params: `[1, 2]`, outdirParam: "outdir", want: `[1, 2]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolveInputs(json.RawMessage(tc.params), inputs, tc.allowLocal, tc.salad, tc.outdirParam, outputs)
			if tc.want == "" {
				require.Error(t, err, "resolved to %s", got)
				require.ErrorContains(t, err, tc.errHas)
				return
			}
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(got))
		})
	}
}

func TestParamRender(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	flag := param{name: "--parallel", kind: "flag"}
	num := param{name: "--retryCount", kind: "int"}
	enum := param{name: "--on-error", kind: "enum", values: []string{"stop", "continue"}}
	custom := param{name: "-profile", kind: "enum", values: []string{"standard", "test"}, arg: func(v string) []string { return []string{"-profile", v} }}

	for _, tc := range []struct {
		name string
		p    param
		v    *string
		want []string // nil: an error is expected
	}{
		{"flag null", flag, nil, []string{"--parallel"}},
		{"flag empty", flag, str(""), []string{"--parallel"}},
		{"flag true", flag, str("true"), []string{"--parallel"}},
		{"flag with a value", flag, str("x"), nil},
		{"flag false", flag, str("false"), nil},
		{"int", num, str("3"), []string{"--retryCount=3"}},
		{"int zero", num, str("0"), []string{"--retryCount=0"}},
		{"int negative", num, str("-1"), nil},
		{"int too large", num, str("1048577"), nil},
		{"int not a number", num, str("three"), nil},
		{"int null", num, nil, nil},
		{"int smuggling an argument", num, str("3 --outdir=/"), nil},
		{"enum", enum, str("continue"), []string{"--on-error=continue"}},
		{"enum unknown value", enum, str("bogus"), nil},
		{"enum null", enum, nil, nil},
		{"enum with its own rendering", custom, str("test"), []string{"-profile", "test"}},
		{"enum with its own rendering, bad value", custom, str("../x"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.p.render(tc.v)
			if tc.want == nil {
				require.Error(t, err, "rendered %q", got)
				require.ErrorContains(t, err, tc.p.name)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestEngineArgs(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }

	t.Run("rendered in the engine's order", func(t *testing.T) {
		t.Parallel()
		got, err := engineArgs(cwltool(), map[string]*string{"--on-error": str("continue"), "--quiet": nil, "--parallel": str("")})
		require.NoError(t, err)
		require.Equal(t, []string{"--parallel", "--quiet", "--on-error=continue"}, got)
	})
	t.Run("none given", func(t *testing.T) {
		t.Parallel()
		got, err := engineArgs(toil(), nil)
		require.NoError(t, err)
		require.Empty(t, got)
	})
	for _, tc := range []struct {
		engine engine
		key    string
	}{
		{cwltool(), "--outdir"},
		{cwltool(), "--tmpdir-prefix"},
		{toil(), "--jobStore"},
		{snakemake(), "--directory"},
		{nextflow(), "-work-dir"},
		{cwltool(), "--PARALLEL"},
	} {
		t.Run("unknown key "+tc.engine.name+" "+tc.key, func(t *testing.T) {
			t.Parallel()
			_, err := engineArgs(tc.engine, map[string]*string{tc.key: str("/")})
			require.Error(t, err)
			require.ErrorContains(t, err, tc.key)
		})
	}
	t.Run("bad value of a known key", func(t *testing.T) {
		t.Parallel()
		_, err := engineArgs(snakemake(), map[string]*string{"--latency-wait": str("soon")})
		require.ErrorContains(t, err, "--latency-wait")
	})
}

// A toil retry resumes the job store only if the last attempt stored its
// root job there; a store without one is removed, for --restart would fail
// on it.
func TestToilArgvRestart(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	r := &runSpec{work: work, outputs: filepath.Join(work, "out"), tmp: filepath.Join(work, "tmp"),
		workflow: "wf.cwl", params: "params.json", cores: 1}
	store := filepath.Join(work, "jobstore")

	require.NotContains(t, toil().argv("toil-cwl-runner", r), "--restart", "a first attempt has nothing to resume")

	require.NoError(t, os.MkdirAll(filepath.Join(store, "jobs"), 0o750))
	require.NotContains(t, toil().argv("toil-cwl-runner", r), "--restart", "the store has no root job")
	require.NoDirExists(t, store, "the unusable store is removed")

	require.NoError(t, os.MkdirAll(filepath.Join(store, "files", "shared"), 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(store, "files", "shared", "rootJobStoreID"), []byte("kind-CWLWorkflow/instance-x"), 0o640))
	require.Contains(t, toil().argv("toil-cwl-runner", r), "--restart")
	require.DirExists(t, store)
}

func TestSnakemakeTypes(t *testing.T) {
	t.Parallel()
	for version, want := range map[string][]string{
		"7.21.0":  {"6", "7"},
		"9.1.1":   {"6", "7", "8", "9"},
		"6.0.0":   {"6"},
		"unknown": {"6", "7", "8", "9"},
		"5.32":    {"5"},
	} {
		require.Equal(t, map[string][]string{"SMK": want}, snakemake().typesFor(version), version)
	}
}

// A retry runs in the run's directory, which was the engine user's: links
// its workflow left where root writes (params.json, a directory, the zip
// of WDL imports) are replaced, not followed.
func TestARetryDoesNotWriteThroughLinksTheLastAttemptLeft(t *testing.T) {
	t.Parallel()
	victimDir := t.TempDir()
	victim := filepath.Join(victimDir, "shadow")
	require.NoError(t, os.WriteFile(victim, []byte("root:secret\n"), 0o600))
	f := newJobFiles(t, "cwltool", map[string]string{"wf.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [echo]\ninputs: []\noutputs: []\n"}, "wf.cwl", `{"x": 1}`)
	f.job.Attempt = 2
	require.NoError(t, os.Symlink(victim, filepath.Join(f.job.Dir, "params.json")))
	require.NoError(t, os.Symlink(victimDir, filepath.Join(f.job.Dir, "outputs")))
	require.NoError(t, os.MkdirAll(filepath.Join(f.job.Dir, "work"), 0o750))
	zip := filepath.Join(f.job.Dir, "work", "imports-2.zip")
	require.NoError(t, os.Symlink(victim, zip))

	p := New(Config{PATH: os.Getenv("PATH")}, nil)
	r, err := p.prepare(f.job, cwltool())
	require.NoError(t, err)
	require.NoError(t, zipWDL(r.inputs, zip))

	got, err := os.ReadFile(victim)
	require.NoError(t, err)
	require.Equal(t, "root:secret\n", string(got), "written through a link")
	for _, name := range []string{"params.json", "outputs", "work/imports-2.zip"} {
		fi, err := os.Lstat(filepath.Join(f.job.Dir, name))
		require.NoError(t, err)
		require.Zero(t, fi.Mode()&os.ModeSymlink, "%s is still a link", name)
	}
	params, err := os.ReadFile(r.params)
	require.NoError(t, err)
	require.JSONEq(t, `{"x": 1}`, string(params))
}

// letEngineUsersThrough makes dir and the directories above it, up to the
// system's temporary directory, ones every user may pass through (t.TempDir's
// are 0700), as an operator's WES_WORK_DIR must be for engines run as
// other users.
func letEngineUsersThrough(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o711))
	}
}
