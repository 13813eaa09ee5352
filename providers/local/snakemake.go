package local

import (
	"encoding/json"
	"errors"
	"io/fs"
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

// snakemake runs a Snakefile in the run's inputs directory (where its
// attachments are, so relative paths work as on the author's machine), with
// workflow_params as its config file. The files it creates there are its
// outputs.
func snakemake() engine {
	return engine{
		name: "snakemake", binary: "snakemake",
		versionArgs: []string{"--version"}, version: lastVersion,
		types: map[string][]string{"SMK": {"6", "7", "8", "9"}},
		// A Snakefile names the Snakemake it was written for by major
		// version: the one installed runs those of its major and before
		// (from 6), not later ones.
		typesFor: func(version string) map[string][]string {
			major, err := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
			if err != nil {
				return map[string][]string{"SMK": {"6", "7", "8", "9"}}
			}
			var vs []string
			for v := min(6, major); v <= major; v++ { // an old one: its own only
				vs = append(vs, strconv.Itoa(v))
			}
			return map[string][]string{"SMK": vs}
		},
		params: []param{
			{name: "--keep-going", kind: "flag"},
			{name: "--printshellcmds", kind: "flag"},
			{name: "--forceall", kind: "flag"},
			{name: "--latency-wait", kind: "int"},
			{name: "--restart-times", kind: "int"},
		},
		// Snakemake's leader waits for its running jobs on SIGTERM; the
		// marker-wide signal reaches the jobs themselves.
		stop: syscall.SIGTERM,
		argv: func(bin string, r *runSpec) []string {
			argv := []string{bin,
				"--snakefile", strings.SplitN(r.workflow, "#", 2)[0],
				"--configfile", r.params,
				"--directory", r.inputs,
				"--cores", strconv.Itoa(r.cores),
				// A killed attempt leaves a lock and incomplete files; the
				// next attempt in this directory must not trip over them.
				"--nolock", "--rerun-incomplete",
			}
			return append(argv, r.engineArgs...)
		},
		outputs: snakemakeOutputs,
		tasks:   func() taskParser { return &smkTasks{jobs: map[string]*models.TaskLog{}} },
	}
}

// snakemakeOutputs links the files the workflow created in its directory
// (everything but the staged attachments and Snakemake's own .snakemake/)
// into outputs/ and describes them as CWL-style File objects keyed by path.
// Files a previous attempt made count too: a retry does not redo them.
func snakemakeOutputs(r *runSpec, _ []byte) (json.RawMessage, error) {
	out := map[string]any{}
	root, err := os.OpenRoot(r.dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	err = filepath.WalkDir(r.inputs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.inputs, p)
		if d.IsDir() {
			if d.Name() == ".snakemake" {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || slices.Contains(r.job.Inputs, filepath.ToSlash(rel)) {
			return err
		}
		dst := filepath.Join(r.outputs, rel)
		srcIn, err := relIn(r.dir, p)
		if err != nil {
			return err
		}
		dstIn, err := relIn(r.dir, dst)
		if err != nil {
			return err
		}
		if err := root.MkdirAll(filepath.Dir(dstIn), 0o750); err != nil {
			return err
		}
		if err := root.Remove(dstIn); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := linkOrCopy(root, srcIn, dstIn); err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = map[string]any{
			"class": "File", "location": fileURL(dst), "basename": d.Name(), "size": info.Size(),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

var (
	smkRule  = regexp.MustCompile(`^\s*(?:local)?rule (\S+):$`)
	smkError = regexp.MustCompile(`^\s*Error in rule (\S+):$`)
	smkJobID = regexp.MustCompile(`^\s+jobid: (\d+)$`)
	// Snakemake 7 says "Finished job N."; 9 says "Finished jobid: N (Rule: NAME)".
	smkFinished = regexp.MustCompile(`^\s*Finished job(?:id:)? (\d+)(?:\.| \(Rule: \S+\))$`)
)

// smkTasks follows Snakemake's job blocks: "rule NAME:" … "jobid: N" starts
// job N; "Finished job N." ends it; "Error in rule NAME:" … "jobid: N"
// fails it.
type smkTasks struct {
	rule    string
	failing bool
	jobs    map[string]*models.TaskLog
}

func (s *smkTasks) line(l string, now time.Time) []models.TaskLog {
	switch m := smkRule.FindStringSubmatch(l); {
	case m != nil:
		s.rule, s.failing = m[1], false
		return nil
	}
	if m := smkError.FindStringSubmatch(l); m != nil {
		s.rule, s.failing = m[1], true
		return nil
	}
	if m := smkJobID.FindStringSubmatch(l); m != nil && s.rule != "" {
		id := m[1]
		defer func() { s.rule = "" }()
		if s.failing {
			t, ok := s.jobs[id]
			if !ok {
				t = &models.TaskLog{ID: id, Name: s.rule}
			}
			code := 1
			t.EndTime, t.ExitCode = &now, &code
			return []models.TaskLog{*t}
		}
		t := &models.TaskLog{ID: id, Name: s.rule, StartTime: &now}
		s.jobs[id] = t
		return []models.TaskLog{*t}
	}
	if m := smkFinished.FindStringSubmatch(l); m != nil {
		t, ok := s.jobs[m[1]]
		if !ok {
			return nil
		}
		code := 0
		t.EndTime, t.ExitCode = &now, &code
		return []models.TaskLog{*t}
	}
	return nil
}
