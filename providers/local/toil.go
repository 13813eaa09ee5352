package local

import (
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
			{name: "--stats", kind: "flag"},
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
			// A retry resumes the job store the last attempt left.
			if _, err := os.Stat(filepath.Join(r.work, "jobstore")); err == nil {
				argv = append(argv, "--restart")
			}
			argv = append(argv, r.engineArgs...)
			return append(argv, r.workflow, r.params)
		},
		outputs: cwlOutputs,
	}
}
