// Package local runs workflow engines as subprocesses of the executor: one
// adapter per engine (cwltool, toil, snakemake, nextflow, cromwell), each building an
// argument vector, never a shell string.
//
// A run's directory (providers.Job.Dir) has a fixed layout:
//
//	inputs/        attachments, as submitted (workflow_url may name one)
//	params.json    workflow_params, relative input locations made absolute
//	work/          the engine's working directory (Toil job store, Nextflow work/)
//	tmp/           TMPDIR and the engine's temporary directories
//	outputs/       files the workflow produced
//	stdout.log, stderr.log   the engine's output (written by the executor)
package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// Config tunes the local provider.
type Config struct {
	// CancelGrace is how long an engine may take to stop after its stop
	// signal before the whole process tree is killed.
	CancelGrace time.Duration
	// Cores is what an engine may use (snakemake --cores, toil --maxCores).
	Cores int
	// AllowLocalWorkflows accepts file:// and absolute workflow paths.
	AllowLocalWorkflows bool
	// PATH is the search path for engines and their environment.
	PATH string
	// Getenv reads the executor's environment, of which an engine is given
	// only the variables its adapter names (passEnv: JAVA_HOME, NXF_HOME, …).
	Getenv func(string) string
	// WaitDelay bounds how long the engine's output is still read after
	// the engine exited: a process it left behind that no longer carries
	// the run's marker (one that cleared its environment and left the
	// process tree) may hold the pipes open for ever.
	WaitDelay time.Duration
	// EngineUser, if set, is the user and group engines run as, with no
	// supplementary groups (the executor must be root to switch): a
	// workflow then cannot read what only the executor's user may, such
	// as its NATS credentials. Each run's directory is given to it before
	// its engine starts.
	EngineUser *syscall.Credential
	// EngineUIDs, if set, gives each run's engine a user of its own
	// instead (EngineUser is then unused): runs cannot reach each other's
	// directories.
	EngineUIDs *UIDPool
}

// Provider runs engines found on this host.
type Provider struct {
	cfg     Config
	log     *slog.Logger
	engines []engine

	once     sync.Once
	detected map[string]detectedEngine
}

type detectedEngine struct {
	engine
	path    string
	version string
}

// New returns a local provider with every adapter this package has.
func New(cfg Config, log *slog.Logger) *Provider {
	if log == nil {
		log = slog.Default()
	}
	if cfg.CancelGrace <= 0 {
		cfg.CancelGrace = 20 * time.Second
	}
	if cfg.Cores <= 0 {
		cfg.Cores = 1
	}
	if cfg.WaitDelay <= 0 {
		cfg.WaitDelay = 5 * time.Second
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.PATH == "" {
		cfg.PATH = cfg.Getenv("PATH")
	}
	if u := engineUserOf(cfg); u != nil {
		var dropped []string
		cfg.PATH, dropped = searchablePATH(cfg.PATH, u.Uid, u.Gid)
		if len(dropped) > 0 {
			log.Warn("PATH directories the engines' user cannot enter are left out of theirs", "dropped", dropped)
		}
	}
	return &Provider{cfg: cfg, log: log, engines: []engine{cwltool(), toil(), snakemake(), nextflow(), cromwell()}}
}

// detect finds each engine on PATH and asks its version, once.
func (p *Provider) detect(ctx context.Context) map[string]detectedEngine {
	p.once.Do(func() {
		// Each engine is asked in parallel: Python engines take seconds to
		// print a version.
		found := make([]*detectedEngine, len(p.engines))
		var wg sync.WaitGroup
		for i, e := range p.engines {
			wg.Go(func() { found[i] = p.detectOne(ctx, e) })
		}
		wg.Wait()
		p.detected = map[string]detectedEngine{}
		for _, d := range found {
			if d != nil {
				p.detected[d.name] = *d
			}
		}
	})
	return p.detected
}

func (p *Provider) detectOne(ctx context.Context, e engine) *detectedEngine {
	path, err := lookPath(e.binary, p.cfg.PATH)
	if err != nil {
		p.log.Info("engine not installed", "engine", e.name, "binary", e.binary)
		return nil
	}
	vctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(vctx, path, e.versionArgs...)
	cmd.Env = append([]string{"PATH=" + p.cfg.PATH, "HOME=" + os.TempDir(), "LANG=C.UTF-8"}, p.passEnv(e)...)
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil {
		return nil // the process is stopping: no engine is wrong
	}
	if err != nil {
		p.log.Warn("engine found but its version could not be read; not offering it", "engine", e.name, "path", path, "err", err, "output", string(out))
		return nil
	}
	return &detectedEngine{engine: e, path: path, version: e.version(string(out))}
}

// passEnv returns the variables of the executor's environment that e is
// given, with their defaults where unset.
func (p *Provider) passEnv(e engine) []string {
	var env []string
	for _, name := range e.passEnv {
		if v := p.cfg.Getenv(name); v != "" {
			env = append(env, name+"="+v)
		} else if e.envDefault != nil {
			if v := e.envDefault(name, p.cfg.Getenv); v != "" {
				env = append(env, name+"="+v)
			}
		}
	}
	return env
}

func lookPath(bin, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		f := filepath.Join(dir, bin)
		if fi, err := os.Stat(f); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return f, nil
		}
	}
	return "", exec.ErrNotFound
}

// Engines implements providers.Provider.
func (p *Provider) Engines(ctx context.Context) ([]providers.Engine, error) {
	var out []providers.Engine
	for _, e := range p.engines {
		d, ok := p.detect(ctx)[e.name]
		if !ok {
			continue
		}
		pe := providers.Engine{Name: e.name, Version: d.version, WorkflowTypes: e.types}
		if e.typesFor != nil {
			pe.WorkflowTypes = e.typesFor(d.version)
		}
		for _, prm := range e.params {
			pe.Parameters = append(pe.Parameters, providers.Parameter{Name: prm.name, Type: prm.kind, Values: prm.values})
		}
		out = append(out, pe)
	}
	return out, nil
}

// runSpec is everything an adapter needs to build its command.
type runSpec struct {
	job                             providers.Job
	dir, inputs, work, tmp, outputs string
	params                          string
	workflow                        string // path, or URL, with #fragment if any
	engineArgs                      []string
	cores                           int
	started                         time.Time
}

// Run implements providers.Provider.
func (p *Provider) Run(ctx context.Context, job providers.Job, rep providers.Reporter) (providers.Result, error) {
	d, ok := p.detect(ctx)[job.Engine]
	if !ok {
		return providers.Result{}, fmt.Errorf("engine %q is not installed on this executor", job.Engine)
	}
	if _, err := os.Stat(d.path); err != nil {
		return providers.Result{}, fmt.Errorf("engine %s is no longer installed at %s (it was when this executor started): %w", d.name, d.path, err)
	}
	if err := stopEarlierAttempts(job.RunID, job.Attempt); err != nil {
		return providers.Result{}, fmt.Errorf("%w: %w", providers.ErrRetryable, err)
	}
	if err := p.takeBackLeftDir(job.Dir); err != nil {
		return providers.Result{}, fmt.Errorf("%w: take the run's directory back from an earlier attempt's engine user: %w", providers.ErrRetryable, err)
	}
	r, err := p.prepare(job, d.engine)
	if err != nil {
		return providers.Result{}, err
	}
	if d.setup != nil {
		if err := d.setup(r); err != nil {
			return providers.Result{}, err
		}
	}
	argv := d.argv(d.path, r)
	user, release, err := p.engineUser()
	if err != nil {
		return providers.Result{}, err
	}
	// reclaim ends the engine user's hold on the run: for an id of the
	// run's own, it kills every process left of it (one that escaped the
	// marker, daemonized); then it takes the run's directory back,
	// itself first. It runs however Run ends (a cancel, a shutdown, a
	// failed start), before the id goes to another run, which would
	// otherwise be given this one's directory with it. An id whose hold
	// could not be ended is given to no other run.
	reclaimed := user == nil
	reclaim := func() error {
		if reclaimed {
			return nil
		}
		if p.cfg.EngineUIDs != nil {
			if err := killAllOf(user.Uid); err != nil {
				return err
			}
		}
		if err := chownTree(job.Dir, 0, 0, true); err != nil {
			return err
		}
		reclaimed = true
		return nil
	}
	defer func() {
		if err := reclaim(); err != nil {
			p.log.Error("cannot take the run back from its engine's user; its id is given to no other run", "run_id", job.RunID, "uid", user.Uid, "err", err)
			return
		}
		release()
	}()
	if user != nil {
		if err := chownTree(job.Dir, int(user.Uid), int(user.Gid), false); err != nil {
			return providers.Result{}, fmt.Errorf("give the run's directory to the engine's user: %w", err)
		}
	}

	marker := fmt.Sprintf("%s.%d", job.RunID, job.Attempt)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = r.work
	cmd.Env = []string{
		"PATH=" + p.cfg.PATH, "HOME=" + r.tmp, "TMPDIR=" + r.tmp, "LANG=C.UTF-8", "LC_ALL=C.UTF-8",
		markerVar + "=" + marker,
	}
	cmd.Env = append(cmd.Env, p.passEnv(d.engine)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.SysProcAttr.Credential = user
	cmd.WaitDelay = p.cfg.WaitDelay
	var stdout bytes.Buffer
	cmd.Stdout = io.MultiWriter(job.Stdout, &limitedBuffer{buf: &stdout, max: 64 << 20})
	stderr := &lineWriter{dst: job.Stderr}
	if d.tasks != nil {
		parser := d.tasks()
		stderr.fn = func(line string) {
			for _, t := range parser.line(line, time.Now().UTC()) {
				rep.Task(t)
			}
		}
	}
	cmd.Stderr = stderr
	start := cmd.Start
	if p.cfg.EngineUIDs != nil {
		start = func() error { return p.cfg.EngineUIDs.start(cmd) }
	}
	if err := start(); err != nil {
		return providers.Result{}, fmt.Errorf("start %s: %w", d.name, err)
	}
	root := newLeader(cmd.Process.Pid)
	rep.Started(argv)
	log := p.log.With("run_id", job.RunID, "engine", d.name)

	// The engine is waited for without being reaped until terminate is
	// done with it: meanwhile its pid and process group cannot be given to
	// a process of someone else.
	exited := make(chan struct{})
	go func() { waitExited(root); close(exited) }()
	var notes []string
	select {
	case <-exited:
	case <-ctx.Done():
	}
	select {
	case <-exited: // it ended on its own, if a cancel came too: its outcome stands
	default:
		forced, terr := stop(root, marker, d.stop, p.cfg.CancelGrace)
		if terr != nil {
			log.Error("engine processes survived", "err", terr)
		}
		var res providers.Result
		if forced {
			res.SystemLogs = []string{fmt.Sprintf("%s did not stop within %s of %s (WES_CANCEL_GRACE): its processes were killed", d.name, p.cfg.CancelGrace, signalName(d.stop))}
		}
		// Reap the engine; a survivor may be the engine itself, so do not
		// wait for ever.
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case <-waited:
		case <-time.After(2 * p.cfg.WaitDelay):
		}
		stderr.flush()
		if terr != nil {
			return res, errors.Join(ctx.Err(), terr)
		}
		return res, ctx.Err()
	}
	// Whatever the engine left behind (daemonized workers) goes too.
	if err := terminate(root, marker, syscall.SIGKILL, 0); err != nil {
		log.Error("engine processes survived", "err", err)
		notes = append(notes, err.Error())
	}
	werr := cmd.Wait()
	stderr.flush()
	// What follows (task reports, outputs, links resolved) reads the
	// run's directory as root: take it back first, so that no process of
	// the engine's user (another run's workflow, with one user for all)
	// can change it meanwhile.
	if err := reclaim(); err != nil {
		return providers.Result{}, fmt.Errorf("take the run's directory back from the engine's user: %w", err)
	}

	var exitErr *exec.ExitError
	code := 0
	switch {
	case werr == nil:
	case errors.Is(werr, exec.ErrWaitDelay):
		// The engine exited 0, but a process it left behind, out of
		// terminate's reach, held its output open: the run is not the
		// worse for it.
		log.Warn("the engine exited but a process it left behind held its output open; stopped reading it", "wait_delay", p.cfg.WaitDelay)
		notes = append(notes, fmt.Sprintf("%s exited, but a process it left behind kept its output open; output after the exit was not read (waited %s)", d.name, p.cfg.WaitDelay))
	case errors.As(werr, &exitErr):
		code = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		return providers.Result{}, fmt.Errorf("wait for %s: %w", d.name, werr)
	}
	if d.finish != nil {
		tasks, err := d.finish(r)
		if err != nil {
			log.Warn("cannot read the engine's task report", "err", err)
		}
		for _, t := range tasks {
			rep.Task(t)
		}
	}
	if code != 0 && d.failure != nil {
		notes = append(notes, d.failure(r)...)
	}
	res := providers.Result{ExitCode: code, Outputs: json.RawMessage(`{}`), OutputDir: r.outputs, SystemLogs: notes}
	if code == 0 {
		out, err := d.outputs(r, stdout.Bytes())
		if err != nil {
			return providers.Result{}, fmt.Errorf("read outputs of %s: %w", d.name, err)
		}
		res.Outputs = out
	}
	return res, nil
}

// prepare lays out the run directory, resolves the workflow and writes the
// params file.
func (p *Provider) prepare(job providers.Job, e engine) (*runSpec, error) {
	r := &runSpec{
		job: job, dir: job.Dir,
		inputs: filepath.Join(job.Dir, "inputs"), work: filepath.Join(job.Dir, "work"),
		tmp: filepath.Join(job.Dir, "tmp"), outputs: filepath.Join(job.Dir, "outputs"),
		params: filepath.Join(job.Dir, "params.json"), cores: p.cfg.Cores,
	}
	// An earlier attempt's workflow, as the engine's user, may have left
	// links where root now writes (a retry runs in the same directory):
	// what is not a directory here goes, and files root writes are
	// created anew (createFresh).
	for _, d := range []string{r.inputs, r.work, r.tmp, r.outputs} {
		if fi, err := os.Lstat(d); err == nil && !fi.IsDir() {
			if err := os.Remove(d); err != nil {
				return nil, fmt.Errorf("clear %s: %w", d, err)
			}
		}
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	// What the request asks that cannot be run is the user's to fix.
	refused := func(err error) error { return fmt.Errorf("%w: %w", providers.ErrInvalidRequest, err) }
	wf, err := resolveWorkflow(job.Request.WorkflowURL, r.inputs, p.cfg.AllowLocalWorkflows)
	if err != nil {
		return nil, refused(err)
	}
	r.workflow = wf
	salad := job.Request.WorkflowType == "CWL" // cwltool and toil read the params with schema-salad
	if salad && !p.cfg.AllowLocalWorkflows {
		if err := checkCWLDocuments(r.inputs, r.workflow); err != nil {
			return nil, refused(err)
		}
	}
	params, err := resolveInputs(job.Request.WorkflowParams, r.inputs, p.cfg.AllowLocalWorkflows, salad, e.outdirParam, r.outputs)
	if err == nil && e.bareInputs {
		params, err = resolveBareInputs(params, r.inputs, r.work, p.cfg.AllowLocalWorkflows)
	}
	if err != nil {
		return nil, refused(err)
	}
	if err := createFresh(r.params, params); err != nil {
		return nil, fmt.Errorf("write params: %w", err)
	}
	if r.engineArgs, err = engineArgs(e, job.Request.WorkflowEngineParameters); err != nil {
		return nil, refused(err)
	}
	return r, nil
}

// resolveWorkflow turns workflow_url into what the engine is given: an
// attachment's path below inputs, an http(s) URL, or (when allowed) a
// local path. A #fragment is kept.
func resolveWorkflow(raw, inputs string, allowLocal bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("workflow_url %q: %w", raw, err)
	}
	frag := ""
	if u.Fragment != "" {
		frag = "#" + u.Fragment
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		return raw, nil
	case "file":
		if !allowLocal {
			return "", errors.New("local workflows are disabled on this executor (WES_ALLOW_LOCAL_WORKFLOWS)")
		}
		return u.Path + frag, nil
	case "":
	default:
		return "", fmt.Errorf("workflow_url scheme %q is not supported", u.Scheme)
	}
	if filepath.IsAbs(u.Path) {
		if !allowLocal {
			return "", errors.New("local workflows are disabled on this executor (WES_ALLOW_LOCAL_WORKFLOWS)")
		}
		return u.Path + frag, nil
	}
	p, err := inside(inputs, u.Path)
	if err != nil {
		return "", fmt.Errorf("workflow_url %q: %w", raw, err)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("workflow_url %q names no staged attachment", raw)
	}
	return p + frag, nil
}

// inside joins rel to dir and refuses a result outside dir.
func inside(dir, rel string) (string, error) {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
		return "", fmt.Errorf("%q points outside the run directory", rel)
	}
	return p, nil
}

// resolveInputs makes relative "location"/"path" members of File and
// Directory objects in workflow_params absolute paths below inputs, and
// refuses local absolute ones unless allowed. For an engine that reads the
// params with schema-salad (salad), whose directives ($include, $import,
// $mixin, $schemas, …) read files too, it refuses those as well, but for
// $namespaces, which only names prefixes.
func resolveInputs(params json.RawMessage, inputs string, allowLocal, salad bool, outdirParam, outputs string) ([]byte, error) {
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	var v any
	if err := json.Unmarshal(params, &v); err != nil {
		return nil, fmt.Errorf("workflow_params: %w", err)
	}
	if obj, ok := v.(map[string]any); ok && outdirParam != "" {
		// The output directory is below outputs/, where the outputs are
		// collected from: a name the run gives is taken below it.
		switch given := obj[outdirParam].(type) {
		case nil:
			obj[outdirParam] = outputs
		case string:
			p, err := inside(outputs, given)
			if err != nil || filepath.IsAbs(given) {
				return nil, fmt.Errorf("input %s %q: the output directory is placed below the run's outputs/; give a relative name", outdirParam, given)
			}
			obj[outdirParam] = p
		default:
			return nil, fmt.Errorf("input %s must be a string, a directory name below the run's outputs/", outdirParam)
		}
	}
	var errs []error
	models.VisitObjects(v, func(t map[string]any) {
		if salad && !allowLocal {
			for k := range t {
				if strings.HasPrefix(k, "$") && k != "$namespaces" {
					errs = append(errs, fmt.Errorf("input key %q: schema-salad directives can read files of the executor's host, and local paths are disabled (WES_ALLOW_LOCAL_WORKFLOWS); attach the file and give its location", k))
				}
			}
		}
		if !models.IsFileObject(t) {
			return
		}
		for _, k := range []string{"location", "path"} {
			s, ok := t[k].(string)
			if !ok {
				continue
			}
			u, err := url.Parse(s)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("input %s %q: %w", k, s, err))
			case u.Scheme == "http" || u.Scheme == "https":
			case u.Scheme == "file" || (u.Scheme == "" && filepath.IsAbs(u.Path)):
				if !allowLocal {
					errs = append(errs, fmt.Errorf("input %s %q is a local path, and local paths are disabled (WES_ALLOW_LOCAL_WORKFLOWS); attach the file", k, s))
				}
			case u.Scheme == "":
				p, err := inside(inputs, u.Path)
				if err != nil {
					errs = append(errs, fmt.Errorf("input %s: %w", k, err))
					continue
				}
				t[k] = p
			default:
				errs = append(errs, fmt.Errorf("input %s %q: scheme %q is not supported", k, s, u.Scheme))
			}
		}
	})
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return json.MarshalIndent(v, "", "  ")
}

// resolveBareInputs resolves the file names in the inputs of an engine that
// takes them as plain strings (WDL), which it reads relative to its working
// directory (work): a relative string that names a staged attachment
// becomes its path below inputs. Unless local paths are allowed, a string
// that names an existing path outside the run directory, absolute or
// relative to work (../../etc/passwd), is refused. Strings that name
// nothing on the host are left alone: most strings are not paths.
func resolveBareInputs(params []byte, inputs, work string, allowLocal bool) ([]byte, error) {
	var v any
	if err := json.Unmarshal(params, &v); err != nil {
		return nil, fmt.Errorf("workflow_params: %w", err)
	}
	runDir := filepath.Dir(inputs)
	var errs []error
	v = models.MapStrings(v, func(x string) any {
		if x == "" {
			return x
		}
		local := x
		if u, err := url.Parse(x); err == nil && strings.EqualFold(u.Scheme, "file") {
			local = u.Path // the engines read file: URLs as local paths
		} else if strings.Contains(x, "://") {
			return x
		}
		if !filepath.IsAbs(x) {
			if p, err := inside(inputs, x); err == nil {
				if _, err := os.Stat(p); err == nil {
					return p
				}
			}
		}
		p := filepath.Clean(local)
		if !filepath.IsAbs(p) {
			p = filepath.Join(work, p)
		}
		if allowLocal || within(runDir, p) {
			return x
		}
		// A path that exists, or a pattern that matches one (engines glob).
		matches, _ := filepath.Glob(p)
		if _, err := os.Lstat(p); err == nil || len(matches) > 0 {
			errs = append(errs, fmt.Errorf("input %q names a path of the executor's host, and local paths are disabled (WES_ALLOW_LOCAL_WORKFLOWS); attach the file and give its name", x))
		}
		return x
	})
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return json.MarshalIndent(v, "", "  ")
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// lineWriter copies to dst and hands each complete line to fn.
type lineWriter struct {
	dst     io.Writer
	fn      func(string)
	mu      sync.Mutex
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n, err := w.dst.Write(p)
	if w.fn == nil {
		return n, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 1<<20 { // a line that never ends is not a task line
		w.partial = w.partial[:0]
	}
	return n, err
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fn != nil && len(w.partial) > 0 {
		w.fn(string(w.partial))
	}
	w.partial = nil
}

// createFresh writes data to a new file at path, removing what is there
// first (a link an earlier attempt's workflow left, which a plain write
// would follow as root).
func createFresh(path string, data []byte) error {
	f, err := openFresh(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openFresh creates a new file at path for writing, removing what is
// there first; O_EXCL makes sure it is no link.
func openFresh(path string) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
}

// takeBackLeftDir takes back a run's directory that an earlier attempt's
// engine user still holds: its executor stopped (crashed) with the run
// going, before it took the directory back. The id's processes, if it is
// a pool id no run of this executor holds, are killed first, so that none
// changes the directory while it is taken back.
func (p *Provider) takeBackLeftDir(dir string) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || st.Uid == uint32(os.Geteuid()) {
		return nil // not there yet, or ours
	}
	if pool := p.cfg.EngineUIDs; pool != nil && pool.contains(st.Uid) && !pool.holds(st.Uid) {
		if err := killAllOf(st.Uid); err != nil {
			return err
		}
	}
	return chownTree(dir, os.Geteuid(), os.Getegid(), true)
}

// engineUserOf returns the user engines run as, for checks that hold for
// every id of a pool (none of them has an account or a group): its first.
func engineUserOf(cfg Config) *syscall.Credential {
	if cfg.EngineUIDs != nil {
		return &syscall.Credential{Uid: cfg.EngineUIDs.first, Gid: cfg.EngineUIDs.first}
	}
	return cfg.EngineUser
}

// engineUser returns the user a run's engine runs as (nil: the executor's
// own), and a release to call once the run's processes are gone.
func (p *Provider) engineUser() (*syscall.Credential, func(), error) {
	if p.cfg.EngineUIDs != nil {
		return p.cfg.EngineUIDs.acquire()
	}
	if u := p.cfg.EngineUser; u != nil {
		return &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: []uint32{}}, func() {}, nil
	}
	return nil, func() {}, nil
}

// chownTree gives dir and everything below it to uid:gid, links
// themselves and not what they name, through an os.Root (no path is
// followed out of dir). Given to the engine's user it works bottom-up,
// dir itself last; taken back (dirFirst), dir first: either way no
// process of that user (another run's workflow) can reach a directory
// that is not its own yet, or any longer, to swap what is in it for a
// link.
func chownTree(dir string, uid, gid int, dirFirst bool) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if dirFirst {
		if err := root.Lchown(".", uid, gid); err != nil {
			return err
		}
	}
	var paths []string
	if err := fs.WalkDir(root.FS(), ".", func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		return err
	}
	if dirFirst {
		for _, p := range paths[1:] {
			if err := root.Lchown(p, uid, gid); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range slices.Backward(paths) { // a directory after what it holds
		if err := root.Lchown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// signalName names a stop signal as people know it.
func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}
