package local

import (
	"regexp"
	"time"

	"github.com/wes-dev/wes/models"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// toil runs CWL with toil-cwl-runner, its job store in the run's work
// directory so that a retry can resume it. Toil's workers start sessions of
// their own: stopping a run relies on the process marker, not the group.
func toil() engine {
	return engine{
		name: "toil", binary: "toil-cwl-runner",
		versionArgs: []string{"--version"}, version: lastVersion,
		types: cwlVersions,
		params: []param{
			{name: "--retryCount", kind: "int"},
			{name: "--logLevel", kind: "enum", values: []string{"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}},
			{name: "--no-container", kind: "flag"},
		},
		stop: syscall.SIGTERM,
		argv: func(bin string, r *runSpec) []string {
			argv := []string{bin,
				"--jobStore", "file:" + filepath.Join(r.work, "jobstore"),
				"--workDir", r.work,
				"--outdir", r.outputs,
				"--tmpdir-prefix", filepath.Join(r.tmp, "toil-"),
				"--tmp-outdir-prefix", filepath.Join(r.tmp, "toil-out-"),
				"--batchSystem", "single_machine",
				"--maxCores", strconv.Itoa(r.cores),
				"--clean", "onSuccess",
			}
			// A retry resumes the job store the last attempt left, if that
			// attempt got as far as storing its root job. One that did not
			// (its workflow or inputs failed to load, it was killed early)
			// left a store that --restart cannot open: toil would fail on
			// that, not on what the attempt did. It is started afresh.
			store := filepath.Join(r.work, "jobstore")
			if _, err := os.Stat(filepath.Join(store, "files", "shared", "rootJobStoreID")); err == nil {
				argv = append(argv, "--restart")
			} else {
				// Should this fail, toil refuses the store that exists, and says so.
				_ = os.RemoveAll(store)
			}
			argv = append(argv, r.engineArgs...)
			return append(argv, r.workflow, r.params)
		},
		outputs: cwlOutputs,
		tasks:   func() taskParser { return &toilTasks{open: map[string]*models.TaskLog{}} },
	}
}

// Toil's leader logs "Issued job 'CWLJob' NAME kind-CWLJob/instance-ID …"
// when it starts a tool (again for each retry of it), "Job failed with
// exit value N: 'CWLJob' NAME kind-CWLJob/instance-ID …" when a try
// failed, followed by the failed worker's log, in which cwltool says
// "[job NAME] exited with status: S", and "Finished toil run
// successfully." at the end. At its default log level it does not say when
// a job that succeeded ends.
var (
	toilIssued   = regexp.MustCompile(`Issued job '[^']*' (\S+) kind-\S+/(instance-[A-Za-z0-9_]+)`)
	toilFailed   = regexp.MustCompile(`Job failed with exit value (\d+): '[^']*' (\S+) kind-\S+/(instance-[A-Za-z0-9_]+)`)
	toilStatus   = regexp.MustCompile(`\[job (\S+)\] exited with status: (\d+)`)
	toilFinished = regexp.MustCompile(`Finished toil run successfully`)
)

type toilTasks struct {
	open  map[string]*models.TaskLog
	order []string
	// failed is the task whose failed worker's log follows, if any.
	failed *models.TaskLog
}

func (p *toilTasks) line(s string, now time.Time) []models.TaskLog {
	if m := toilIssued.FindStringSubmatch(s); m != nil {
		p.failed = nil
		t := &models.TaskLog{ID: m[2], Name: m[1], StartTime: &now}
		if _, again := p.open[m[2]]; !again {
			p.order = append(p.order, m[2])
		}
		p.open[m[2]] = t
		return []models.TaskLog{*t}
	}
	if m := toilFailed.FindStringSubmatch(s); m != nil {
		t, ok := p.open[m[3]]
		if !ok {
			return nil
		}
		t.EndTime = &now
		t.SystemLogs = append(t.SystemLogs, "toil: the job failed (its worker exited "+m[1]+")")
		p.failed = t
		return []models.TaskLog{*t}
	}
	if m := toilStatus.FindStringSubmatch(s); m != nil && p.failed != nil && p.failed.Name == m[1] {
		// The tool's own exit status, from the failed worker's log.
		if code, err := strconv.Atoi(m[2]); err == nil {
			p.failed.ExitCode = &code
			return []models.TaskLog{*p.failed}
		}
		return nil
	}
	if toilFinished.MatchString(s) {
		var done []models.TaskLog
		for _, id := range p.order {
			t := p.open[id]
			code := 0
			t.EndTime, t.ExitCode = &now, &code
			done = append(done, *t)
		}
		p.open, p.order, p.failed = map[string]*models.TaskLog{}, nil, nil
		return done
	}
	return nil
}
