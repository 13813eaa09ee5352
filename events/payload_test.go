package events_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

func TestDecodeRunSubmitted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		data        string
		wantVersion bool // error wraps ErrUnsupportedVersion
		wantErr     string
		want        events.RunSubmitted
	}{
		{
			name: "valid",
			data: `{"v":1,"run_id":"r1","engine":"mock","engine_version":"1.0.0",
				"request":{"workflow_type":"CWL","workflow_type_version":"v1.2","workflow_url":"main.cwl"},
				"attachments":[{"name":"main.cwl","key":"runs/r1/attachments/main.cwl"}],
				"submitted_at":"2024-05-06T07:08:09Z"}`,
			want: events.RunSubmitted{
				V: 1, RunID: "r1", Engine: "mock", EngineVersion: "1.0.0",
				Request:     models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.2", WorkflowURL: "main.cwl"},
				Attachments: []models.Attachment{{Name: "main.cwl", Key: "runs/r1/attachments/main.cwl"}},
				SubmittedAt: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
			},
		},
		{name: "newer version", data: `{"v":2,"run_id":"r1","engine":"mock"}`, wantVersion: true},
		{name: "no version", data: `{"run_id":"r1","engine":"mock"}`, wantVersion: true},
		{name: "malformed JSON", data: `{"v":1,"run_id":`, wantErr: "decode payload"},
		{name: "not an object", data: `[1,2]`, wantErr: "decode payload"},
		{name: "missing run_id", data: `{"v":1,"engine":"mock"}`, wantErr: "without run_id or engine"},
		{name: "missing engine", data: `{"v":1,"run_id":"r1"}`, wantErr: "without run_id or engine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := events.DecodeRunSubmitted([]byte(tt.data))
			switch {
			case tt.wantVersion:
				require.ErrorIs(t, err, events.ErrUnsupportedVersion)
			case tt.wantErr != "":
				require.Error(t, err)
				require.NotErrorIs(t, err, events.ErrUnsupportedVersion)
				require.Contains(t, err.Error(), tt.wantErr)
			default:
				require.NoError(t, err)
				require.Equal(t, tt.want, got)
			}
		})
	}
}

func TestDecodeRunEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		data        string
		wantVersion bool
		wantErr     string
		check       func(t *testing.T, e events.RunEvent)
	}{
		{
			name: "state change",
			data: `{"v":1,"run_id":"r1","attempt":2,"state":"EXECUTOR_ERROR","time":"2024-05-06T07:08:09Z",
				"source":"ex-1","exit_code":3,"error":"boom","workflow":{"url":"main.cwl","type":"CWL","version":"v1.2","engine":"mock","tags":{"team":"a"}}}`,
			check: func(t *testing.T, e events.RunEvent) {
				require.Equal(t, "r1", e.RunID)
				require.Equal(t, 2, e.Attempt)
				require.Equal(t, models.ExecutorError, e.State)
				require.Equal(t, time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), e.Time)
				require.Equal(t, "ex-1", e.Source)
				require.NotNil(t, e.ExitCode)
				require.Equal(t, 3, *e.ExitCode)
				require.Equal(t, "boom", e.Error)
				require.Equal(t, &events.WorkflowRef{URL: "main.cwl", Type: "CWL", Version: "v1.2", Engine: "mock", Tags: map[string]string{"team": "a"}}, e.Workflow)
			},
		},
		{
			name: "state-less task event",
			data: `{"v":1,"run_id":"r1","attempt":1,"time":"2024-05-06T07:08:09Z","source":"ex-1","tasks":[{"ID":"t1","Name":"step"}]}`,
			check: func(t *testing.T, e events.RunEvent) {
				require.Empty(t, e.State)
				require.Len(t, e.Tasks, 1)
				require.Equal(t, "t1", e.Tasks[0].ID)
			},
		},
		{name: "newer version", data: `{"v":2,"run_id":"r1","state":"COMPLETE"}`, wantVersion: true},
		{name: "older version", data: `{"v":0,"run_id":"r1","state":"COMPLETE"}`, wantVersion: true},
		{name: "malformed JSON", data: `{"v":1,"run_id":"r1"`, wantErr: "decode payload"},
		{name: "wrong field type", data: `{"v":1,"run_id":"r1","attempt":"one"}`, wantErr: "decode payload"},
		{name: "missing run_id", data: `{"v":1,"state":"COMPLETE"}`, wantErr: "without run_id"},
		{name: "unknown state", data: `{"v":1,"run_id":"r1","state":"DONE"}`, wantErr: "unknown state"},
		{name: "lower-case state", data: `{"v":1,"run_id":"r1","state":"complete"}`, wantErr: "unknown state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := events.DecodeRunEvent([]byte(tt.data))
			switch {
			case tt.wantVersion:
				require.ErrorIs(t, err, events.ErrUnsupportedVersion)
			case tt.wantErr != "":
				require.Error(t, err)
				require.NotErrorIs(t, err, events.ErrUnsupportedVersion)
				require.Contains(t, err.Error(), tt.wantErr)
			default:
				require.NoError(t, err)
				tt.check(t, got)
			}
		})
	}
}

func TestUnknownStateIsModelsErrInvalid(t *testing.T) {
	t.Parallel()
	_, err := events.DecodeRunEvent([]byte(`{"v":1,"run_id":"r1","state":"DONE"}`))
	require.True(t, errors.Is(err, models.ErrInvalid), "err = %v", err)
}

func TestRunEventMsgID(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	base := events.RunEvent{RunID: "r1", Attempt: 1, State: models.Running, Time: t0, Source: "ex-1"}
	tests := []struct {
		name string
		a, b events.RunEvent
		same bool
	}{
		{
			name: "same fact reported twice, at other times and by other executors",
			a:    base,
			b:    events.RunEvent{RunID: "r1", Attempt: 1, State: models.Running, Time: t0.Add(time.Minute), Source: "ex-2", SystemLog: "again"},
			same: true,
		},
		{name: "different state", a: base, b: events.RunEvent{RunID: "r1", Attempt: 1, State: models.Complete, Time: t0}},
		{name: "different attempt", a: base, b: events.RunEvent{RunID: "r1", Attempt: 2, State: models.Running, Time: t0}},
		{name: "different run", a: base, b: events.RunEvent{RunID: "r2", Attempt: 1, State: models.Running, Time: t0}},
		{
			name: "task events at different times",
			a:    events.RunEvent{RunID: "r1", Attempt: 1, Time: t0},
			b:    events.RunEvent{RunID: "r1", Attempt: 1, Time: t0.Add(time.Nanosecond)},
		},
		{
			name: "task events at the same time",
			a:    events.RunEvent{RunID: "r1", Attempt: 1, Time: t0},
			b:    events.RunEvent{RunID: "r1", Attempt: 1, Time: t0},
			same: true,
		},
		{
			name: "task event and state change",
			a:    events.RunEvent{RunID: "r1", Attempt: 1, Time: t0},
			b:    events.RunEvent{RunID: "r1", Attempt: 1, State: models.Queued, Time: t0},
		},
		{
			// Run ids are free text: "r1" attempt 11 must not meet "r11" attempt 1.
			name: "run id and attempt do not run together",
			a:    events.RunEvent{RunID: "r1", Attempt: 11, State: models.Running},
			b:    events.RunEvent{RunID: "r11", Attempt: 1, State: models.Running},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.NotEmpty(t, tt.a.MsgID())
			if tt.same {
				require.Equal(t, tt.a.MsgID(), tt.b.MsgID())
			} else {
				require.NotEqual(t, tt.a.MsgID(), tt.b.MsgID())
			}
		})
	}
}

func TestEncodeEventRoundTrip(t *testing.T) {
	t.Parallel()
	names, err := events.NewNames("Test")
	require.NoError(t, err)
	p := events.NewPublisher(nil, names)
	code := 4
	start := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name string
		ev   events.RunEvent
	}{
		{name: "final event", ev: events.RunEvent{
			V:     99, // overwritten with Version
			RunID: "r1", Attempt: 2, State: models.ExecutorError, Time: start, Source: "ex-1",
			Cmd: []string{"cwltool", "main.cwl"}, ExitCode: &code, Outputs: json.RawMessage(`{"out":1}`),
			SystemLog: "attempt 2", Error: "", Workflow: &events.WorkflowRef{URL: "main.cwl", Type: "CWL", Version: "v1.2", Engine: "cwltool", Tags: map[string]string{"k": "v"}},
		}},
		{name: "task event", ev: events.RunEvent{
			RunID: "r2", Attempt: 1, Time: start, Source: "ex-1",
			Tasks: []models.TaskLog{{ID: "t1", Name: "step", Cmd: []string{"echo"}, StartTime: &start}},
		}},
		{name: "event without time", ev: events.RunEvent{RunID: "r3", Attempt: 1, State: models.Queued, Source: "api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := time.Now()
			subject, msgID, data, err := p.EncodeEvent(tt.ev)
			require.NoError(t, err)
			require.Equal(t, names.EventSubject(tt.ev.RunID), subject)

			got, err := events.DecodeRunEvent(data)
			require.NoError(t, err)
			require.Equal(t, events.Version, got.V)
			require.Equal(t, got.MsgID(), msgID)
			want := tt.ev
			want.V = events.Version
			if tt.ev.Time.IsZero() {
				require.False(t, got.Time.IsZero(), "EncodeEvent must stamp an event without time")
				require.WithinDuration(t, before, got.Time, time.Minute)
				want.Time = got.Time
			}
			require.True(t, want.Time.Equal(got.Time))
			want.Time = got.Time
			if want.Tasks != nil {
				for i := range want.Tasks {
					require.True(t, want.Tasks[i].StartTime.Equal(*got.Tasks[i].StartTime))
					got.Tasks[i].StartTime = want.Tasks[i].StartTime
				}
			}
			require.Equal(t, want, got)
		})
	}
}

func TestEncodeSubmittedRoundTrip(t *testing.T) {
	t.Parallel()
	names, err := events.NewNames("Test")
	require.NoError(t, err)
	p := events.NewPublisher(nil, names)
	m := events.RunSubmitted{
		RunID: "r1", Engine: "mock", EngineVersion: "1.0.0",
		Request: models.RunRequest{
			WorkflowParams: json.RawMessage(`{"x":1}`), WorkflowType: "CWL", WorkflowTypeVersion: "v1.2",
			Tags: map[string]string{"k": "v"}, WorkflowURL: "main.cwl",
		},
		Attachments: []models.Attachment{{Name: "main.cwl", Key: events.AttachmentKey("r1", "main.cwl")}},
		SubmittedAt: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
	}
	subject, msgID, data, err := p.EncodeSubmitted(m)
	require.NoError(t, err)
	require.Equal(t, "test.runs.submitted.mock.r1", subject)
	require.Equal(t, "r1", msgID)

	got, err := events.DecodeRunSubmitted(data)
	require.NoError(t, err)
	m.V = events.Version
	require.Equal(t, m, got)
}

func TestCallbackAllowed(t *testing.T) {
	t.Parallel()
	allow := []string{"https://hooks.example.com/wes/", "http://127.0.0.1:8080", "https://hooks.example.com/team-a"}
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://hooks.example.com/wes/run-done", true},
		{"https://HOOKS.example.com/wes/x", true},
		{"http://127.0.0.1:8080/anything", true},
		{"https://hooks.example.com/other", false},            // outside the path
		{"https://hooks.example.com/team-a", true},            // the prefix itself
		{"https://hooks.example.com/team-a/x", true},          // below it
		{"https://hooks.example.com/team-admin", false},       // a path that starts like it
		{"https://hooks.example.com/team-a-evil/x", false},    // a segment that starts like it
		{"http://hooks.example.com/wes/x", false},             // another scheme
		{"https://hooks.example.com:8443/wes/x", false},       // another port
		{"http://127.0.0.1:8080@169.254.169.254/", false},     // user information naming the allowed host
		{"http://127.0.0.1:80801/", false},                    // a port that starts like the allowed one
		{"http://127.0.0.1:8080.evil.example/", false},        // a host that starts like it
		{"https://hooks.example.com/wes/../admin", false},     // dot segments
		{"https://hooks.example.com/wes/%2e%2e/admin", false}, // encoded dot segments
		{"https://hooks.example.com/wes/x#frag", false},       // a fragment
		{"ftp://hooks.example.com/wes/x", false},              // not http(s)
		{"hooks.example.com/wes/x", false},                    // no scheme
		{"", false},
	} {
		require.Equal(t, tc.ok, events.CallbackAllowed(tc.url, allow), tc.url)
	}
	require.False(t, events.CallbackAllowed("https://hooks.example.com/wes/x", nil), "nothing is allowed by default")
}
