package local

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/wes-dev/wes/models"
)

// nextflow runs a pipeline with `nextflow run`, its work directory and
// trace file in the run's work directory, `params.outdir` pointing at
// outputs/ unless the run set it. Built against Nextflow's documented CLI;
// Nextflow cannot be installed on the development machine, so only the
// argument vector and the trace parsing are tested.
func nextflow() engine {
	return engine{
		name: "nextflow", binary: "nextflow",
		versionArgs: []string{"-version"}, version: nextflowVersion,
		// The launcher keeps Nextflow's jars in NXF_HOME ($HOME/.nextflow):
		// a run's HOME is its own tmp/, so without it every run would fetch
		// them again (and fail offline).
		passEnv: []string{"NXF_HOME", "JAVA_HOME", "JAVA_CMD", "NXF_OFFLINE"},
		envDefault: func(name string, getenv func(string) string) string {
			if name == "NXF_HOME" && getenv("HOME") != "" {
				return filepath.Join(getenv("HOME"), ".nextflow")
			}
			return ""
		},
		types: map[string][]string{"NFL": {"DSL2"}},
		params: []param{
			{name: "-profile", kind: "enum", values: []string{"standard", "test"}, arg: func(v string) []string { return []string{"-profile", v} }},
		},
		stop: syscall.SIGTERM,
		argv: func(bin string, r *runSpec) []string {
			argv := []string{bin, "-log", filepath.Join(r.work, "nextflow.log"), "run", strings.SplitN(r.workflow, "#", 2)[0],
				"-params-file", r.params,
				"-work-dir", filepath.Join(r.work, "nf-work"),
				"-with-trace", nextflowTracePath(r),
				"-ansi-log", "false",
			}
			// A retry picks up the cached tasks of the last attempt.
			if _, err := os.Stat(filepath.Join(r.work, "nf-work")); err == nil {
				argv = append(argv, "-resume")
			}
			return append(argv, r.engineArgs...)
		},
		outputs:     dirOutputs,
		outdirParam: "outdir",
		// A pipeline's params name files by plain strings, which Nextflow
		// resolves from its launch directory (work/).
		bareInputs: true,
		finish: func(r *runSpec) ([]models.TaskLog, error) {
			return nextflowTrace(r.dir, nextflowTracePath(r))
		},
	}
}

// nextflowTracePath is an attempt's trace file: Nextflow (22.10 and later)
// refuses to start when the trace file exists, as a retry's would.
func nextflowTracePath(r *runSpec) string {
	return filepath.Join(r.work, "trace-"+strconv.Itoa(max(r.job.Attempt, 1))+".txt")
}

var nextflowVersionRE = regexp.MustCompile(`version (\d+(?:\.\d+)+)`)

// nextflowVersion reads the banner of `nextflow -version` ("version 23.10.1
// build 5891"; its last line cites doi:10.1038/…, so not the last number).
func nextflowVersion(out string) string {
	if m := nextflowVersionRE.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return lastVersion(out)
}

// dirOutputs describes every file below outputs/ as a File object keyed by
// its relative path. Links into the run directory (Nextflow's publishDir
// links by default) are replaced by the files they name, so that the
// outputs outlive the run directory.
func dirOutputs(r *runSpec, _ []byte) (json.RawMessage, error) {
	if err := resolveLinks(r.outputs, r.dir); err != nil {
		return nil, err
	}
	out := map[string]any{}
	err := filepath.WalkDir(r.outputs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.outputs, p)
		out[filepath.ToSlash(rel)] = map[string]any{
			"class": "File", "location": fileURL(p), "basename": d.Name(), "size": info.Size(),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// resolveLinks replaces each symbolic link below dir that names a file or
// directory inside root by hard links to the files it names. A link out
// of root (a local path the run was given) stays: it is not the run's to
// store.
func resolveLinks(dir, root string) error {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	// Every change goes through the run's directory as a root: no link
	// planted below dir leads root out of it.
	rootDir, err := os.OpenRoot(realRoot)
	if err != nil {
		return err
	}
	defer rootDir.Close()
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil // dangling: nothing to store
		}
		if !within(realRoot, target) {
			return nil
		}
		if real, err := filepath.EvalSymlinks(filepath.Dir(p)); err != nil || within(target, real) {
			return err // a link to a directory that holds it: a cycle, left as it is
		}
		pIn, err := relIn(root, p)
		if err != nil {
			return err
		}
		if err := rootDir.Remove(pIn); err != nil {
			return err
		}
		return filepath.WalkDir(target, func(src string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(target, src)
			srcIn, err := relIn(realRoot, src)
			if err != nil {
				return err
			}
			dstIn := filepath.Join(pIn, rel)
			switch {
			case d.IsDir():
				return rootDir.MkdirAll(dstIn, 0o750)
			case d.Type().IsRegular():
				return linkOrCopy(rootDir, srcIn, dstIn)
			}
			return nil
		})
	})
}

// nextflowTrace reads Nextflow's trace file (tab-separated, with a header),
// path below the run's directory dir, into task logs.
func nextflowTrace(dir, path string) ([]models.TaskLog, error) {
	f, err := openRunFile(dir, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd := csv.NewReader(f)
	rd.Comma, rd.LazyQuotes, rd.FieldsPerRecord = '\t', true, -1
	rows, err := rd.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("empty trace file")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	get := func(row []string, k string) string {
		if i, ok := col[k]; ok && i < len(row) {
			return row[i]
		}
		return ""
	}
	var tasks []models.TaskLog
	for _, row := range rows[1:] {
		t := models.TaskLog{ID: get(row, "task_id"), Name: get(row, "name")}
		if t.ID == "" {
			t.ID = get(row, "hash")
		}
		if st := get(row, "status"); st != "" {
			t.SystemLogs = []string{"status " + st}
		}
		if ex := get(row, "exit"); ex != "" && ex != "-" {
			if code, err := strconv.Atoi(ex); err == nil {
				t.ExitCode = &code
			}
		}
		tasks = append(tasks, t)
	}
	return tasks, nil
}
