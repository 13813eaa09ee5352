package projector

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

var (
	t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Minute)
	t2 = t0.Add(2 * time.Minute)
	// A zone other than UTC: Apply stores times in UTC.
	paris = time.FixedZone("CET", 3600)
)

func intp(i int) *int              { return &i }
func timep(t time.Time) *time.Time { return &t }

// event returns an executor event of attempt for the run "r1".
func event(state models.State, attempt int, at time.Time) events.RunEvent {
	return events.RunEvent{V: events.Version, RunID: "r1", Attempt: attempt, State: state, Time: at, Source: "exec-1"}
}

func TestApply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		run   models.Run
		ev    events.RunEvent
		seq   uint64
		want  models.Run // the run after Apply
		tasks []models.TaskLog
	}{
		{
			name: "QUEUED → INITIALIZING sets start_time and the attempt",
			run:  models.Run{ID: "r1", State: models.Queued, LastEventSeq: 3},
			ev:   event(models.Initializing, 1, t0.In(paris)),
			seq:  4,
			want: models.Run{ID: "r1", State: models.Initializing, Attempt: 1, StartTime: timep(t0), LastEventSeq: 4},
		},
		{
			name: "INITIALIZING → RUNNING sets cmd",
			run:  models.Run{ID: "r1", State: models.Initializing, Attempt: 1, StartTime: timep(t0), LastEventSeq: 4},
			ev: func() events.RunEvent {
				ev := event(models.Running, 1, t1)
				ev.Cmd = []string{"cwltool", "--outdir", "/out", "main.cwl"}
				return ev
			}(),
			seq: 9,
			want: models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0),
				Cmd: []string{"cwltool", "--outdir", "/out", "main.cwl"}, LastEventSeq: 9},
		},
		{
			name: "PAUSED → RUNNING without a cmd keeps the cmd",
			run:  models.Run{ID: "r1", State: models.Paused, Attempt: 1, StartTime: timep(t0), Cmd: []string{"cwltool"}, LastEventSeq: 9},
			ev:   event(models.Running, 1, t1),
			seq:  10,
			want: models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0), Cmd: []string{"cwltool"}, LastEventSeq: 10},
		},
		{
			name: "RUNNING → COMPLETE sets end_time, exit_code and outputs",
			run:  models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0), Cmd: []string{"cwltool"}, LastEventSeq: 9},
			ev: func() events.RunEvent {
				ev := event(models.Complete, 1, t2.In(paris))
				ev.ExitCode = intp(0)
				ev.Outputs = json.RawMessage(`{"out": {"class": "File", "location": "s3://b/out.txt"}}`)
				return ev
			}(),
			seq: 12,
			want: models.Run{ID: "r1", State: models.Complete, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2),
				Cmd: []string{"cwltool"}, ExitCode: intp(0),
				Outputs:      json.RawMessage(`{"out": {"class": "File", "location": "s3://b/out.txt"}}`),
				LastEventSeq: 12},
		},
		{
			name: "RUNNING → EXECUTOR_ERROR sets end_time and a non-zero exit_code",
			run:  models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0), LastEventSeq: 9},
			ev: func() events.RunEvent {
				ev := event(models.ExecutorError, 1, t2)
				ev.ExitCode = intp(1)
				return ev
			}(),
			seq:  10,
			want: models.Run{ID: "r1", State: models.ExecutorError, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2), ExitCode: intp(1), LastEventSeq: 10},
		},
		{
			// The run never started: it has an end_time and no start_time.
			name: "QUEUED → CANCELED sets end_time only",
			run:  models.Run{ID: "r1", State: models.Queued, LastEventSeq: 1},
			ev:   events.RunEvent{V: events.Version, RunID: "r1", State: models.Canceled, Time: t1, Source: "api"},
			seq:  2,
			want: models.Run{ID: "r1", State: models.Canceled, EndTime: timep(t1), LastEventSeq: 2},
		},
		{
			name: "SYSTEM_ERROR sets error_message, end_time and appends system_logs",
			run: models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0),
				SystemLogs: []string{"2025-03-01T12:00:00Z picked up by exec-1"}, LastEventSeq: 9},
			ev: func() events.RunEvent {
				ev := event(models.SystemError, 1, t2.In(paris))
				ev.Error = "object store unreachable"
				ev.SystemLog = "giving up after 3 attempts: object store unreachable"
				return ev
			}(),
			seq: 10,
			want: models.Run{ID: "r1", State: models.SystemError, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2),
				ErrorMessage: "object store unreachable",
				SystemLogs: []string{
					"2025-03-01T12:00:00Z picked up by exec-1",
					"2025-03-01T12:02:00Z giving up after 3 attempts: object store unreachable",
				},
				LastEventSeq: 10},
		},
		{
			name: "newer attempt after a crash mid-run: RUNNING 1 → INITIALIZING 2 resets cmd and exit_code",
			run: models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0),
				Cmd: []string{"cwltool", "main.cwl"}, ExitCode: intp(137), LastEventSeq: 9},
			ev:  event(models.Initializing, 2, t2),
			seq: 15,
			// The first start_time stays: the run started then.
			want: models.Run{ID: "r1", State: models.Initializing, Attempt: 2, StartTime: timep(t0), LastEventSeq: 15},
		},
		{
			name: "newer attempt going back to the queue: RUNNING 1 → QUEUED 2",
			run:  models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0), Cmd: []string{"cwltool"}, LastEventSeq: 9},
			ev:   event(models.Queued, 2, t2),
			seq:  10,
			want: models.Run{ID: "r1", State: models.Queued, Attempt: 2, StartTime: timep(t0), LastEventSeq: 10},
		},
		{
			name: "API event with attempt 0 applies to the current attempt: CANCELING on RUNNING at attempt 2",
			run:  models.Run{ID: "r1", State: models.Running, Attempt: 2, StartTime: timep(t0), Cmd: []string{"cwltool"}, LastEventSeq: 20},
			ev:   events.RunEvent{V: events.Version, RunID: "r1", State: models.Canceling, Time: t2, Source: "api"},
			seq:  21,
			want: models.Run{ID: "r1", State: models.Canceling, Attempt: 2, StartTime: timep(t0), Cmd: []string{"cwltool"}, LastEventSeq: 21},
		},
		{
			name: "the outcome that beat the cancel wins: CANCELING → COMPLETE",
			run:  models.Run{ID: "r1", State: models.Canceling, Attempt: 1, StartTime: timep(t0), LastEventSeq: 20},
			ev:   event(models.Complete, 1, t2),
			seq:  22,
			want: models.Run{ID: "r1", State: models.Complete, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2), LastEventSeq: 22},
		},
		{
			name: "task-only event returns its tasks and changes no state",
			run:  models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0), LastEventSeq: 9},
			ev: func() events.RunEvent {
				ev := event("", 1, t1)
				ev.Tasks = []models.TaskLog{{RunID: "r1", ID: "step1", Name: "echo", ExitCode: intp(0)}, {RunID: "r1", ID: "step2", Name: "wc"}}
				return ev
			}(),
			seq:   10,
			want:  models.Run{ID: "r1", State: models.Running, Attempt: 1, StartTime: timep(t0), LastEventSeq: 10},
			tasks: []models.TaskLog{{RunID: "r1", ID: "step1", Name: "echo", ExitCode: intp(0)}, {RunID: "r1", ID: "step2", Name: "wc"}},
		},
		{
			name: "task-only event of a terminal run still records its tasks",
			run:  models.Run{ID: "r1", State: models.Complete, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2), LastEventSeq: 9},
			ev: func() events.RunEvent {
				ev := event("", 1, t2)
				ev.Tasks = []models.TaskLog{{RunID: "r1", ID: "last"}}
				return ev
			}(),
			seq:   10,
			want:  models.Run{ID: "r1", State: models.Complete, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2), LastEventSeq: 10},
			tasks: []models.TaskLog{{RunID: "r1", ID: "last"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			run := tc.run
			tasks, err := Apply(&run, tc.ev, tc.seq)
			require.NoError(t, err)
			require.Equal(t, tc.tasks, tasks)
			want := tc.want
			if tc.ev.State != "" && tc.ev.Source != events.SourceAPI {
				want.Executor = tc.ev.Source // a state event names the executor that holds the run
			}
			require.Equal(t, want, run)
			for _, ts := range []*time.Time{run.StartTime, run.EndTime} {
				if ts != nil {
					require.Equal(t, time.UTC, ts.Location())
				}
			}
		})
	}
}

func TestApplyRefused(t *testing.T) {
	t.Parallel()
	running2 := models.Run{ID: "r1", State: models.Running, Attempt: 2, StartTime: timep(t0),
		Cmd: []string{"cwltool"}, SystemLogs: []string{"x"}, LastEventSeq: 50}
	complete := models.Run{ID: "r1", State: models.Complete, Attempt: 1, StartTime: timep(t0), EndTime: timep(t1),
		ExitCode: intp(0), Outputs: json.RawMessage(`{"a": 1}`), LastEventSeq: 50}
	canceling := models.Run{ID: "r1", State: models.Canceling, Attempt: 1, StartTime: timep(t0), LastEventSeq: 50}

	withDetails := func(ev events.RunEvent) events.RunEvent {
		ev.Cmd = []string{"other"}
		ev.ExitCode = intp(3)
		ev.Outputs = json.RawMessage(`{"b": 2}`)
		ev.Error = "boom"
		ev.SystemLog = "should not be logged"
		ev.Tasks = []models.TaskLog{{RunID: "r1", ID: "t"}}
		return ev
	}
	tests := []struct {
		name       string
		run        models.Run
		ev         events.RunEvent
		seq        uint64
		transition *models.TransitionError // errors.As target expected, if any
		stale      bool                    // wraps ErrStaleAttempt
	}{
		{name: "replay at the last sequence", run: running2, ev: withDetails(event(models.Complete, 2, t2)), seq: 50},
		{name: "replay below the last sequence", run: running2, ev: withDetails(event(models.Complete, 2, t2)), seq: 7},
		{name: "replay of a task-only event", run: running2, ev: withDetails(event("", 2, t2)), seq: 49},
		{name: "COMPLETE → RUNNING", run: complete, ev: withDetails(event(models.Running, 1, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Complete, To: models.Running}},
		{name: "COMPLETE → COMPLETE (same state twice)", run: complete, ev: withDetails(event(models.Complete, 1, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Complete, To: models.Complete}},
		{name: "RUNNING → RUNNING", run: running2, ev: withDetails(event(models.Running, 2, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Running, To: models.Running}},
		{name: "RUNNING → INITIALIZING in the same attempt", run: running2, ev: withDetails(event(models.Initializing, 2, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Running, To: models.Initializing}},
		{name: "newer attempt of a terminal run", run: complete, ev: withDetails(event(models.Initializing, 2, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Complete, To: models.Initializing}},
		{name: "newer attempt of a run being canceled", run: canceling, ev: withDetails(event(models.Initializing, 2, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Canceling, To: models.Initializing}},
		{name: "newer attempt skipping INITIALIZING", run: running2, ev: withDetails(event(models.Complete, 3, t2)), seq: 51,
			transition: &models.TransitionError{From: models.Queued, To: models.Complete}},
		{name: "API cancel of a finished run", run: complete,
			ev:  events.RunEvent{V: events.Version, RunID: "r1", State: models.Canceling, Time: t2, Source: "api"},
			seq: 51, transition: &models.TransitionError{From: models.Complete, To: models.Canceling}},
		{name: "older attempt", run: running2, ev: withDetails(event(models.Complete, 1, t2)), seq: 51, stale: true},
		{name: "older attempt, otherwise valid transition", run: running2, ev: withDetails(event(models.Canceling, 1, t2)), seq: 51, stale: true},
		{name: "task-only event of an older attempt", run: running2, ev: withDetails(event("", 1, t2)), seq: 51, stale: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			run := tc.run
			before := fmt.Sprintf("%#v", run)
			tasks, err := Apply(&run, tc.ev, tc.seq)
			require.Error(t, err)
			require.ErrorIs(t, err, models.ErrSkip)
			require.Nil(t, tasks)
			require.Equal(t, tc.run, run, "the run changed")
			require.Equal(t, before, fmt.Sprintf("%#v", run), "the run changed")

			var te *models.TransitionError
			if tc.transition != nil {
				require.True(t, errors.As(err, &te), "error %v is not a *TransitionError", err)
				require.Equal(t, tc.transition, te)
			} else {
				require.False(t, errors.As(err, &te), "error %v is a *TransitionError", err)
			}
			require.Equal(t, tc.stale, errors.Is(err, models.ErrStaleAttempt), "error %v", err)
		})
	}
}

func TestApplySystemLogsBounded(t *testing.T) {
	t.Parallel()
	run := models.Run{ID: "r1", State: models.Running, Attempt: 1}
	for i := range maxSystemLogs + 10 {
		ev := event("", 1, t0)
		ev.SystemLog = fmt.Sprintf("line %d", i)
		_, err := Apply(&run, ev, uint64(i+1))
		require.NoError(t, err)
	}
	require.Len(t, run.SystemLogs, maxSystemLogs)
	require.Equal(t, "2025-03-01T12:00:00Z line 0", run.SystemLogs[0])
	require.Equal(t, uint64(maxSystemLogs+10), run.LastEventSeq)
}

// Events of one attempt applied in stream order walk the run through its
// whole life; replaying the stream afterwards changes nothing.
func TestApplySequenceThenReplay(t *testing.T) {
	t.Parallel()
	stream := []events.RunEvent{
		event(models.Initializing, 1, t0),
		func() events.RunEvent { ev := event(models.Running, 1, t0); ev.Cmd = []string{"cwltool"}; return ev }(),
		func() events.RunEvent { ev := event("", 1, t1); ev.Tasks = []models.TaskLog{{ID: "s"}}; return ev }(),
		func() events.RunEvent { ev := event(models.Complete, 1, t2); ev.ExitCode = intp(0); return ev }(),
	}
	run := models.Run{ID: "r1", State: models.Queued}
	for i, ev := range stream {
		_, err := Apply(&run, ev, uint64(i+1))
		require.NoError(t, err, "event %d", i)
	}
	want := models.Run{ID: "r1", State: models.Complete, Attempt: 1, StartTime: timep(t0), EndTime: timep(t2),
		Cmd: []string{"cwltool"}, ExitCode: intp(0), LastEventSeq: 4, Executor: "exec-1"}
	require.Equal(t, want, run)
	for i, ev := range stream {
		_, err := Apply(&run, ev, uint64(i+1))
		require.ErrorIs(t, err, models.ErrSkip, "replay of event %d", i)
	}
	require.Equal(t, want, run)
}
