package providers

import (
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/wes-dev/wes/models"
)

// Engine describes one workflow engine a provider can run.
type Engine struct {
	// Name is the engine's name as clients give it in workflow_engine
	// (lower case: cwltool, toil, snakemake, nextflow, mock).
	Name    string
	Version string
	// WorkflowTypes maps a workflow type (CWL, WDL, SMK, NFL) to the
	// versions of it the engine accepts.
	WorkflowTypes map[string][]string
	// Parameters are the workflow_engine_parameters a run may set; any other
	// key is refused.
	Parameters []Parameter
}

// Parameter is a workflow engine parameter a run may set.
type Parameter struct {
	Name string
	// Type is the kind of value it takes (models.ParamFlag, ParamInt, …).
	Type    string
	Default string
	// Values lists what an enum takes.
	Values []string
}

// Job is one attempt at a run, handed to a provider.
type Job struct {
	RunID         string
	Attempt       int
	Engine        string
	EngineVersion string
	Request       models.RunRequest
	// Dir is the run's directory on this host; staged attachments are in
	// Dir/inputs. The provider may write anywhere below Dir, nowhere else.
	// It is "" for a job of a Dirless provider that has no attachments.
	Dir string
	// Inputs names the staged attachments (slash-separated, below Dir/inputs).
	Inputs []string
	// Stdout and Stderr receive the engine's output as it is produced.
	Stdout, Stderr io.Writer
}

// Reporter hears what happens while a job runs.
type Reporter interface {
	// Started is called once the engine process runs, with its argv.
	Started(cmd []string)
	// Task is called when a step of the workflow starts or ends.
	Task(task models.TaskLog)
}

// Result is the outcome of a job whose engine ran to the end.
type Result struct {
	// ExitCode is the engine's; non-zero means the workflow failed
	// (EXECUTOR_ERROR).
	ExitCode int
	// Outputs is the workflow's output object (a JSON object). File
	// locations in it that lie below OutputDir (file:// URLs) are rewritten
	// by the executor once it has stored the files.
	Outputs json.RawMessage
	// OutputDir, when set, holds the files the workflow produced.
	OutputDir string
	// SystemLogs are notes for the run's system_logs about how the attempt
	// went on this backend (processes left behind, output cut short).
	SystemLogs []string
}

// Provider runs jobs on one kind of backend.
type Provider interface {
	// Engines lists the engines this provider can run here and now.
	Engines(ctx context.Context) ([]Engine, error)
	// Run runs job to the end and returns its result. An error means the
	// system failed, not the workflow (SYSTEM_ERROR). When ctx is canceled,
	// Run stops the engine and returns promptly.
	Run(ctx context.Context, job Job, r Reporter) (Result, error)
}

// Dirless is implemented by a provider whose jobs need no directory on
// this host (the mock). For a run without attachments the executor then
// creates none: Job.Dir is "", and Stdout and Stderr are kept in memory.
// A directory costs a few filesystem operations per run that, on some
// disks, cost more than everything else the executor does for it.
type Dirless interface {
	Dirless() bool
}

// ErrRetryable marks a failure of ours that another attempt may not meet
// (a lost connection, a full disk that may be freed): wrap it with
// fmt.Errorf("…: %w", providers.ErrRetryable) or join it.
var ErrRetryable = errors.New("retryable")

// ErrInvalidRequest marks a run a provider refuses for what it asks: an
// engine parameter's value, a workflow_url or an input that names a host
// path while local paths are disabled. It is the user's to fix, not ours:
// the run ends EXECUTOR_ERROR, saying why, and is not tried again.
var ErrInvalidRequest = errors.New("the run's request is refused")

// ErrSurvivors marks a failure to stop every process of a job: some
// survived SIGKILL (a process in uninterruptible sleep, say) and may still
// be running. A provider returns it, joined with ctx.Err(), from a Run whose
// context was canceled, so that the run is not reported as stopped cleanly.
var ErrSurvivors = errors.New("processes of the job survived SIGKILL")
