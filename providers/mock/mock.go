// Package mock is the seed's "mock WES provider for testing without
// external dependencies": it pretends to run any workflow, for as long and
// with the outcome that the run's workflow_engine_parameters ask for.
package mock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// Engine parameters a run may set.
const (
	ParamDuration = "duration" // how long the run takes, e.g. "2s"
	ParamOutcome  = "outcome"  // COMPLETE, EXECUTOR_ERROR or SYSTEM_ERROR
	ParamExitCode = "exit_code"
)

// Provider is the mock provider.
type Provider struct{}

// New returns a mock provider.
func New() *Provider { return &Provider{} }

// Dirless implements providers.Dirless: a mock run writes no files.
func (*Provider) Dirless() bool { return true }

// Engines implements providers.Provider: one engine, "mock", that accepts
// every workflow type.
func (*Provider) Engines(context.Context) ([]providers.Engine, error) {
	return []providers.Engine{{
		Name:    "mock",
		Version: "1.0.0",
		WorkflowTypes: map[string][]string{
			"CWL": {"v1.0", "v1.1", "v1.2"},
			"WDL": {"1.0", "1.1"},
			"SMK": {"7", "8", "9"},
			"NFL": {"DSL2"},
		},
		Parameters: []providers.Parameter{
			{Name: ParamDuration, Type: models.ParamDuration, Default: "1s"},
			{Name: ParamOutcome, Type: models.ParamEnum, Default: string(models.Complete),
				Values: []string{string(models.Complete), string(models.ExecutorError), string(models.SystemError)}},
			{Name: ParamExitCode, Type: models.ParamInt, Default: "1"},
		},
	}}, nil
}

type params struct {
	duration time.Duration
	outcome  models.State
	exitCode int
}

func parse(p map[string]*string) (params, error) {
	out := params{duration: time.Second, outcome: models.Complete, exitCode: 1}
	get := func(k string) (string, bool) {
		v, ok := p[k]
		if !ok || v == nil {
			return "", false
		}
		return *v, true
	}
	var err error
	if v, ok := get(ParamDuration); ok {
		if out.duration, err = time.ParseDuration(v); err != nil || out.duration < 0 {
			return out, fmt.Errorf("mock: %s %q is not a non-negative duration such as \"2s\"", ParamDuration, v)
		}
	}
	if v, ok := get(ParamOutcome); ok {
		switch st := models.State(v); st {
		case models.Complete, models.ExecutorError, models.SystemError:
			out.outcome = st
		default:
			return out, fmt.Errorf("mock: %s %q is not COMPLETE, EXECUTOR_ERROR or SYSTEM_ERROR", ParamOutcome, v)
		}
	}
	if v, ok := get(ParamExitCode); ok {
		if out.exitCode, err = strconv.Atoi(v); err != nil {
			return out, fmt.Errorf("mock: %s %q is not an integer", ParamExitCode, v)
		}
		if out.exitCode == 0 && out.outcome == models.ExecutorError {
			return out, fmt.Errorf("mock: %s must not be 0 when %s is EXECUTOR_ERROR: a failed workflow exits non-zero", ParamExitCode, ParamOutcome)
		}
	}
	return out, nil
}

// Run implements providers.Provider.
func (*Provider) Run(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
	p, err := parse(job.Request.WorkflowEngineParameters)
	if err != nil {
		return providers.Result{}, fmt.Errorf("%w: %w", providers.ErrInvalidRequest, err)
	}
	cmd := []string{"mock", "--duration", p.duration.String(), "--outcome", string(p.outcome), job.Request.WorkflowURL}
	r.Started(cmd)
	start := time.Now().UTC()
	r.Task(models.TaskLog{ID: "mock-1", Name: "mock step", Cmd: cmd, StartTime: &start})
	fmt.Fprintf(job.Stdout, "mock: running %s (%s %s), attempt %d, for %s\n",
		job.Request.WorkflowURL, job.Request.WorkflowType, job.Request.WorkflowTypeVersion, job.Attempt, p.duration)
	fmt.Fprintf(job.Stderr, "mock: outcome will be %s\n", p.outcome)

	select {
	case <-ctx.Done():
		fmt.Fprintln(job.Stderr, "mock: stopped")
		return providers.Result{}, ctx.Err()
	case <-time.After(p.duration):
	}

	end := time.Now().UTC()
	task := models.TaskLog{ID: "mock-1", Name: "mock step", Cmd: cmd, StartTime: &start, EndTime: &end}
	switch p.outcome {
	case models.SystemError:
		r.Task(task)
		return providers.Result{}, errors.New("mock: simulated system error (outcome=SYSTEM_ERROR)")
	case models.ExecutorError:
		code := p.exitCode
		task.ExitCode = &code
		r.Task(task)
		fmt.Fprintf(job.Stderr, "mock: workflow failed with exit code %d\n", code)
		return providers.Result{ExitCode: code, Outputs: json.RawMessage(`{}`)}, nil
	}
	code := 0
	task.ExitCode = &code
	r.Task(task)
	fmt.Fprintln(job.Stdout, "mock: done")
	outputs, err := json.Marshal(map[string]any{
		"workflow_url": job.Request.WorkflowURL,
		"message":      "mock run complete",
		"attempt":      job.Attempt,
	})
	if err != nil {
		return providers.Result{}, err
	}
	return providers.Result{ExitCode: 0, Outputs: outputs}, nil
}
