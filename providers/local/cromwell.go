package local

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wes-dev/wes/models"
)

// cromwell runs WDL with Cromwell's single-workflow mode:
//
//	cromwell run WF --inputs params.json --imports work/imports-N.zip --metadata-output work/metadata-N.json
//
// It runs from the run's work directory, where Cromwell's local backend
// keeps cromwell-executions/ and cromwell-workflow-logs/. Cromwell reads
// --imports as a zip (a directory fails: it reads the path's bytes), and
// resolves a local workflow's imports in it: the attached .wdl files,
// under their names. `run` exits 0 when the
// workflow succeeded and 1 otherwise; on SIGTERM it aborts its jobs first
// (system.abort-jobs-on-terminate is on in single-workflow mode). The
// metadata it writes at the end gives the outputs, one task per call
// attempt, and why a workflow failed. Output files are linked below
// outputs/ under their path in cromwell-executions/.
//
// Built against Cromwell's documented command line (`java -jar cromwell.jar
// run`, here through the `cromwell` launcher that Bioconda and Homebrew
// install). Cromwell cannot be installed on the development machine: its
// argument vector and the metadata parsing are tested, and a run through
// the provider against a stand-in script that writes metadata as Cromwell
// does; no WDL ran on a real Cromwell here.
func cromwell() engine {
	return engine{
		name: "cromwell", binary: "cromwell",
		versionArgs: []string{"--version"}, version: cromwellVersion,
		types: map[string][]string{"WDL": {"draft-2", "1.0"}},
		stop:  syscall.SIGTERM,
		// The launcher runs java from JAVA_HOME or PATH, with JAVA_OPTS.
		passEnv: []string{"JAVA_HOME", "JAVA_OPTS"},
		setup:   func(r *runSpec) error { return zipWDL(r.inputs, cromwellImports(r)) },
		argv: func(bin string, r *runSpec) []string {
			argv := []string{bin, "run", strings.SplitN(r.workflow, "#", 2)[0],
				"--inputs", r.params,
				"--imports", cromwellImports(r),
				"--metadata-output", cromwellMetadata(r),
			}
			return append(argv, r.engineArgs...)
		},
		outputs: cromwellOutputs,
		finish: func(r *runSpec) ([]models.TaskLog, error) {
			md, err := readCromwellMetadata(r)
			if err != nil {
				return nil, err
			}
			return md.tasks(), nil
		},
		failure: func(r *runSpec) []string {
			md, err := readCromwellMetadata(r)
			if err != nil {
				return nil
			}
			return md.failureMessages()
		},
		bareInputs: true,
	}
}

var cromwellVersionRE = regexp.MustCompile(`(?m)^cromwell (\S+)`)

// cromwellVersion reads `cromwell --version` ("cromwell 86", or
// "cromwell 87-6b4c5a1" for a development build).
func cromwellVersion(out string) string {
	if m := cromwellVersionRE.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return "unknown"
}

// cromwellMetadata is where an attempt's metadata goes: one file per
// attempt, so that a retry never reads what the last attempt left.
func cromwellMetadata(r *runSpec) string {
	return filepath.Join(r.work, "metadata-"+strconv.Itoa(max(r.job.Attempt, 1))+".json")
}

// cromwellImports is an attempt's zip of the attached WDL files.
func cromwellImports(r *runSpec) string {
	return filepath.Join(r.work, "imports-"+strconv.Itoa(max(r.job.Attempt, 1))+".zip")
}

// zipWDL writes a zip of the .wdl files below dir, under their paths in
// it, to dst.
func zipWDL(dir, dst string) error {
	f, err := openFresh(dst)
	if err != nil {
		return fmt.Errorf("imports zip: %w", err)
	}
	zw := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || !strings.EqualFold(filepath.Ext(p), ".wdl") {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		w, err := zw.Create(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(w, src)
		return err
	})
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("imports zip: %w", err)
	}
	return nil
}

// cromwellMeta is the part of Cromwell's workflow metadata that is read.
type cromwellMeta struct {
	Status   string                    `json:"status"`
	Outputs  map[string]any            `json:"outputs"`
	Calls    map[string][]cromwellCall `json:"calls"`
	Failures []cromwellFailure         `json:"failures"`
}

type cromwellCall struct {
	ExecutionStatus string            `json:"executionStatus"`
	ShardIndex      *int              `json:"shardIndex"`
	Attempt         int               `json:"attempt"`
	Start           string            `json:"start"`
	End             string            `json:"end"`
	ReturnCode      *int              `json:"returnCode"`
	CommandLine     string            `json:"commandLine"`
	Failures        []cromwellFailure `json:"failures"`
	SubWorkflow     *cromwellMeta     `json:"subWorkflowMetadata"`
}

type cromwellFailure struct {
	Message  string            `json:"message"`
	CausedBy []cromwellFailure `json:"causedBy"`
}

func readCromwellMetadata(r *runSpec) (*cromwellMeta, error) {
	f, err := openRunFile(r.dir, cromwellMetadata(r))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 256<<20))
	if err != nil {
		return nil, err
	}
	var md cromwellMeta
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("cromwell metadata: %w", err)
	}
	return &md, nil
}

// tasks has one task per call attempt, sub-workflows' calls included. Its
// id is Cromwell's job key (NAME:SHARD:ATTEMPT, NA for no shard), after the
// keys of the sub-workflow calls it is in ("hello.sub:0:1/inner.t:NA:1"):
// a sub-workflow scattered, or called twice, runs the same calls.
func (md *cromwellMeta) tasks() []models.TaskLog { return md.tasksIn("") }

func (md *cromwellMeta) tasksIn(prefix string) []models.TaskLog {
	var out []models.TaskLog
	for _, name := range slices.Sorted(maps.Keys(md.Calls)) {
		for _, c := range md.Calls[name] {
			shard := "NA"
			if c.ShardIndex != nil && *c.ShardIndex >= 0 {
				shard = strconv.Itoa(*c.ShardIndex)
			}
			key := fmt.Sprintf("%s%s:%s:%d", prefix, name, shard, max(c.Attempt, 1))
			if c.SubWorkflow != nil {
				out = append(out, c.SubWorkflow.tasksIn(key+"/")...)
				continue
			}
			t := models.TaskLog{ID: key, Name: name, ExitCode: c.ReturnCode}
			if c.CommandLine != "" {
				// The local backend runs a call's command as a bash script.
				t.Cmd = []string{"/bin/bash", "-c", c.CommandLine}
			}
			t.StartTime, t.EndTime = cromwellTime(c.Start), cromwellTime(c.End)
			if c.ExecutionStatus != "" {
				t.SystemLogs = append(t.SystemLogs, "status "+c.ExecutionStatus)
			}
			for _, f := range c.Failures {
				t.SystemLogs = append(t.SystemLogs, f.messages()...)
			}
			out = append(out, t)
		}
	}
	return out
}

// failureMessages says why the workflow failed, causes included.
func (md *cromwellMeta) failureMessages() []string {
	var out []string
	for _, f := range md.Failures {
		out = append(out, f.messages()...)
	}
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("… and %d more failures in work/ of the run directory", len(out)-20))
	}
	return out
}

func (f cromwellFailure) messages() []string {
	var out []string
	if f.Message != "" {
		out = append(out, "cromwell: "+f.Message)
	}
	for _, c := range f.CausedBy {
		out = append(out, c.messages()...)
	}
	return out
}

func cromwellTime(s string) *time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil
	}
	t = t.UTC()
	return &t
}

// cromwellOutputs returns the workflow's outputs as Cromwell's metadata
// names them ({"wf.out": …}), each File a File object whose location is
// its link below outputs/ (where the executor stores and serves it).
// Values that are not files of the run stay as they are.
func cromwellOutputs(r *runSpec, _ []byte) (json.RawMessage, error) {
	md, err := readCromwellMetadata(r)
	if err != nil {
		return nil, err
	}
	if md.Status != "" && md.Status != "Succeeded" {
		return nil, fmt.Errorf("cromwell exited 0 but the workflow is %s", md.Status)
	}
	execRoot := filepath.Join(r.work, "cromwell-executions")
	var errs []error
	out := models.MapStrings(md.Outputs, func(s string) any {
		f, err := cromwellFile(r, execRoot, s)
		if err != nil {
			errs = append(errs, err)
		}
		if f != nil {
			return f
		}
		return s
	})
	if md.Outputs == nil {
		out = map[string]any{}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// cromwellFile links the file a WDL output value names below outputs/ and
// returns its File object, or nil when the value is no file of the run (a
// String, a number's text, a path elsewhere). A file of the executions
// directory keeps its path there (wf/ID/call-x/execution/out.txt); another
// file of the run directory (an input handed through) its path in it.
func cromwellFile(r *runSpec, execRoot, value string) (map[string]any, error) {
	if !filepath.IsAbs(value) {
		return nil, nil
	}
	real, err := filepath.EvalSymlinks(value)
	if err != nil {
		return nil, nil
	}
	dir, err := filepath.EvalSymlinks(r.dir)
	if err != nil {
		return nil, err
	}
	if !within(dir, real) {
		return nil, nil // not ours to store: a local path the run was given
	}
	rel, _ := filepath.Rel(dir, real)
	info, err := os.Stat(real)
	if err != nil || !info.Mode().IsRegular() {
		return nil, nil
	}
	if p, err := filepath.Rel(execRoot, filepath.Clean(value)); err == nil && !strings.HasPrefix(p, "..") {
		rel = p
	}
	dst := filepath.Join(r.outputs, rel)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	srcIn, err := relIn(dir, real)
	if err != nil {
		return nil, err
	}
	dstIn, err := relIn(r.dir, dst)
	if err != nil {
		return nil, err
	}
	if err := root.MkdirAll(filepath.Dir(dstIn), 0o750); err != nil {
		return nil, err
	}
	if err := linkOrCopy(root, srcIn, dstIn); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("output %s: %w", value, err)
	}
	return map[string]any{"class": "File", "location": fileURL(dst), "basename": filepath.Base(dst), "size": info.Size()}, nil
}
