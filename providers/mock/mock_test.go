package mock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

func ptr(s string) *string { return &s }

func TestParse(t *testing.T) {
	t.Parallel()
	defaults := params{duration: time.Second, outcome: models.Complete, exitCode: 1}
	tests := []struct {
		name    string
		in      map[string]*string
		want    params
		wantErr string
	}{
		{name: "nil map", in: nil, want: defaults},
		{name: "empty map", in: map[string]*string{}, want: defaults},
		{
			name: "null values are ignored",
			in:   map[string]*string{ParamDuration: nil, ParamOutcome: nil, ParamExitCode: nil},
			want: defaults,
		},
		{name: "duration", in: map[string]*string{ParamDuration: ptr("250ms")}, want: params{duration: 250 * time.Millisecond, outcome: models.Complete, exitCode: 1}},
		{name: "zero duration", in: map[string]*string{ParamDuration: ptr("0s")}, want: params{duration: 0, outcome: models.Complete, exitCode: 1}},
		{name: "negative duration", in: map[string]*string{ParamDuration: ptr("-1s")}, wantErr: "non-negative duration"},
		{name: "duration without unit", in: map[string]*string{ParamDuration: ptr("2")}, wantErr: "non-negative duration"},
		{name: "duration not a duration", in: map[string]*string{ParamDuration: ptr("soon")}, wantErr: "non-negative duration"},
		{name: "empty duration", in: map[string]*string{ParamDuration: ptr("")}, wantErr: "non-negative duration"},
		{name: "outcome complete", in: map[string]*string{ParamOutcome: ptr("COMPLETE")}, want: defaults},
		{name: "outcome executor error", in: map[string]*string{ParamOutcome: ptr("EXECUTOR_ERROR")}, want: params{duration: time.Second, outcome: models.ExecutorError, exitCode: 1}},
		{name: "outcome system error", in: map[string]*string{ParamOutcome: ptr("SYSTEM_ERROR")}, want: params{duration: time.Second, outcome: models.SystemError, exitCode: 1}},
		{name: "outcome not final", in: map[string]*string{ParamOutcome: ptr("RUNNING")}, wantErr: "is not COMPLETE, EXECUTOR_ERROR or SYSTEM_ERROR"},
		{name: "outcome canceled", in: map[string]*string{ParamOutcome: ptr("CANCELED")}, wantErr: "is not COMPLETE, EXECUTOR_ERROR or SYSTEM_ERROR"},
		{name: "outcome lower case", in: map[string]*string{ParamOutcome: ptr("complete")}, wantErr: "is not COMPLETE, EXECUTOR_ERROR or SYSTEM_ERROR"},
		{name: "exit code", in: map[string]*string{ParamExitCode: ptr("4")}, want: params{duration: time.Second, outcome: models.Complete, exitCode: 4}},
		{name: "exit code not an integer", in: map[string]*string{ParamExitCode: ptr("four")}, wantErr: "is not an integer"},
		{name: "exit code fraction", in: map[string]*string{ParamExitCode: ptr("1.5")}, wantErr: "is not an integer"},
		{
			name: "everything",
			in:   map[string]*string{ParamDuration: ptr("2m"), ParamOutcome: ptr("EXECUTOR_ERROR"), ParamExitCode: ptr("7")},
			want: params{duration: 2 * time.Minute, outcome: models.ExecutorError, exitCode: 7},
		},
		{
			name: "unknown keys are not the mock's business",
			in:   map[string]*string{"threads": ptr("4")},
			want: defaults,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parse(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// recorder is a providers.Reporter that remembers what it heard.
type recorder struct {
	mu      sync.Mutex
	started [][]string
	tasks   []models.TaskLog
}

func (r *recorder) Started(cmd []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, cmd)
}

func (r *recorder) Task(task models.TaskLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks = append(r.tasks, task)
}

func (r *recorder) snapshot() ([][]string, []models.TaskLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.started...), append([]models.TaskLog(nil), r.tasks...)
}

type fixture struct {
	rec            *recorder
	stdout, stderr *bytes.Buffer
}

func setup(t *testing.T) fixture {
	t.Helper()
	return fixture{rec: &recorder{}, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
}

func (f fixture) job(engineParams map[string]*string) providers.Job {
	return providers.Job{
		RunID: "r1", Attempt: 2, Engine: "mock", Dir: "/nonexistent",
		Request: models.RunRequest{
			WorkflowType: "CWL", WorkflowTypeVersion: "v1.2", WorkflowURL: "main.cwl",
			WorkflowEngineParameters: engineParams,
		},
		Stdout: f.stdout, Stderr: f.stderr,
	}
}

func TestEngines(t *testing.T) {
	t.Parallel()
	engines, err := New().Engines(context.Background())
	require.NoError(t, err)
	require.Len(t, engines, 1)
	require.Equal(t, "mock", engines[0].Name)
	for _, typ := range []string{"CWL", "WDL", "SMK", "NFL"} {
		require.NotEmpty(t, engines[0].WorkflowTypes[typ], typ)
	}
	var names []string
	for _, p := range engines[0].Parameters {
		names = append(names, p.Name)
	}
	require.ElementsMatch(t, []string{ParamDuration, ParamOutcome, ParamExitCode}, names)
}

func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		params       map[string]*string
		wantErr      string
		wantExitCode int
		check        func(t *testing.T, f fixture, res providers.Result)
	}{
		{
			name:   "complete",
			params: map[string]*string{ParamDuration: ptr("20ms")},
			check: func(t *testing.T, f fixture, res providers.Result) {
				var out map[string]any
				require.NoError(t, json.Unmarshal(res.Outputs, &out))
				require.Equal(t, map[string]any{"workflow_url": "main.cwl", "message": "mock run complete", "attempt": 2.0}, out)
				require.Contains(t, f.stdout.String(), "mock: running main.cwl (CWL v1.2), attempt 2, for 20ms")
				require.Contains(t, f.stdout.String(), "mock: done")
				require.Contains(t, f.stderr.String(), "outcome will be COMPLETE")
			},
		},
		{
			name:         "executor error",
			params:       map[string]*string{ParamDuration: ptr("10ms"), ParamOutcome: ptr("EXECUTOR_ERROR"), ParamExitCode: ptr("4")},
			wantExitCode: 4,
			check: func(t *testing.T, f fixture, res providers.Result) {
				require.JSONEq(t, `{}`, string(res.Outputs))
				require.Contains(t, f.stderr.String(), "workflow failed with exit code 4")
				require.NotContains(t, f.stdout.String(), "mock: done")
			},
		},
		{
			name:    "system error",
			params:  map[string]*string{ParamDuration: ptr("10ms"), ParamOutcome: ptr("SYSTEM_ERROR")},
			wantErr: "simulated system error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			start := time.Now()
			res, err := New().Run(context.Background(), f.job(tt.params), f.rec)
			started, tasks := f.rec.snapshot()

			require.Len(t, started, 1, "Started is called once")
			require.Contains(t, started[0], "main.cwl")
			require.Equal(t, "mock", started[0][0])
			require.Len(t, tasks, 2, "the task is reported when it starts and when it ends")
			require.Equal(t, "mock-1", tasks[0].ID)
			require.NotNil(t, tasks[0].StartTime)
			require.Nil(t, tasks[0].EndTime)
			require.Equal(t, "mock-1", tasks[1].ID)
			require.NotNil(t, tasks[1].EndTime)
			require.False(t, tasks[1].EndTime.Before(*tasks[1].StartTime))
			require.GreaterOrEqual(t, time.Since(start), 10*time.Millisecond, "the run lasts its duration")

			if tt.wantErr != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.wantErr)
				require.False(t, errors.Is(err, context.Canceled))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantExitCode, res.ExitCode)
			require.NotNil(t, tasks[1].ExitCode)
			require.Equal(t, tt.wantExitCode, *tasks[1].ExitCode)
			tt.check(t, f, res)
		})
	}
}

func TestRunRefusesInvalidParameters(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := New().Run(context.Background(), f.job(map[string]*string{ParamOutcome: ptr("MAYBE")}), f.rec)
	require.Error(t, err)
	started, tasks := f.rec.snapshot()
	require.Empty(t, started, "nothing starts with invalid parameters")
	require.Empty(t, tasks)
}

// A run asked to fail must not end COMPLETE: the executor turns exit code 0
// into COMPLETE, so outcome=EXECUTOR_ERROR with exit_code=0 must be refused
// or still fail.
func TestRunExecutorErrorNeverExitsZero(t *testing.T) {
	t.Parallel()
	f := setup(t)
	res, err := New().Run(context.Background(),
		f.job(map[string]*string{ParamDuration: ptr("0s"), ParamOutcome: ptr("EXECUTOR_ERROR"), ParamExitCode: ptr("0")}), f.rec)
	require.True(t, err != nil || res.ExitCode != 0,
		"outcome=EXECUTOR_ERROR exit_code=0 gave err=%v exit code %d: the run would end COMPLETE", err, res.ExitCode)
}

func TestRunCanceled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		res providers.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := New().Run(ctx, f.job(map[string]*string{ParamDuration: ptr("10s")}), f.rec)
		done <- result{res, err}
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case r := <-done:
		require.ErrorIs(t, r.err, context.Canceled)
		require.Empty(t, r.res.Outputs)
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}
	started, tasks := f.rec.snapshot()
	require.Len(t, started, 1)
	require.Len(t, tasks, 1, "a canceled task is not reported as ended")
	require.Contains(t, f.stderr.String(), "mock: stopped")
}
