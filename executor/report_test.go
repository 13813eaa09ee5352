package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		n    int
	}{
		{"short", "hello", 10},
		{"exact", strings.Repeat("a", 100), 100},
		{"long", strings.Repeat("a", 1000), 100},
		{"multibyte", strings.Repeat("é", 1000), 101},
		{"tiny bound", strings.Repeat("a", 1000), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := truncate(tc.in, tc.n)
			if len(tc.in) <= tc.n {
				require.Equal(t, tc.in, got)
				return
			}
			require.LessOrEqual(t, len(got), max(tc.n, 32)+8, got)
			require.Contains(t, got, "bytes cut]")
			require.True(t, strings.ToValidUTF8(got, "?") == got, "cut inside a rune: %q", got)
		})
	}
}

func TestTruncateArgs(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 10_000)
	for _, tc := range []struct {
		name string
		in   []string
		n    int
		want func(t *testing.T, got []string)
	}{
		{"fits", []string{"a", "b"}, 10, func(t *testing.T, got []string) {
			require.Equal(t, []string{"a", "b"}, got)
		}},
		{"one huge argument", []string{"cwltool", big}, 1000, func(t *testing.T, got []string) {
			require.Len(t, got, 2)
			require.Equal(t, "cwltool", got[0])
			require.Contains(t, got[1], "bytes cut]")
		}},
		{"many arguments", strings.Split(strings.Repeat("arg ", 1000), " "), 200, func(t *testing.T, got []string) {
			require.Contains(t, got[len(got)-1], "more arguments cut]")
		}},
		{"no room to cut", []string{strings.Repeat("y", 990), big, "z"}, 1000, func(t *testing.T, got []string) {
			require.Equal(t, []string{strings.Repeat("y", 990), "… [2 more arguments cut]"}, got)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := truncateArgs(tc.in, tc.n)
			total := 0
			for _, a := range got {
				total += len(a)
			}
			require.LessOrEqual(t, total, tc.n+64)
			tc.want(t, got)
		})
	}
}

func TestFit(t *testing.T) {
	t.Parallel()
	size := func(ev events.RunEvent) (int, error) {
		b, err := json.Marshal(ev)
		return len(b), err
	}
	big := strings.Repeat("x", 100_000)
	for _, tc := range []struct {
		name      string
		ev        events.RunEvent
		limit     int
		noteInOut bool
		check     func(t *testing.T, ev events.RunEvent)
	}{
		{name: "small outcome unchanged", limit: 10_000,
			ev: events.RunEvent{State: models.Complete, Outputs: json.RawMessage(`{"a":1}`)},
			check: func(t *testing.T, ev events.RunEvent) {
				require.JSONEq(t, `{"a":1}`, string(ev.Outputs))
				require.Empty(t, ev.SystemLog)
			}},
		{name: "outputs over the limit", limit: 10_000, noteInOut: true,
			ev: events.RunEvent{State: models.Complete, SystemLog: "earlier note", Outputs: json.RawMessage(`{"big":"` + big + `"}`)},
			check: func(t *testing.T, ev events.RunEvent) {
				require.Contains(t, ev.SystemLog, "earlier note")
				require.Contains(t, ev.SystemLog, "the outputs object was left out")
			}},
		{name: "invalid outputs", limit: 10_000, noteInOut: true,
			ev: events.RunEvent{State: models.Complete, Outputs: json.RawMessage(`{"a":`)},
			check: func(t *testing.T, ev events.RunEvent) {
				require.Contains(t, ev.SystemLog, "not valid JSON")
			}},
		{name: "huge task", limit: 1 << 20,
			ev: events.RunEvent{Tasks: []models.TaskLog{{ID: big, Name: big, Cmd: []string{"sh", big, big}, SystemLogs: strings.Split(strings.Repeat("l,", 100), ",")}}},
			check: func(t *testing.T, ev events.RunEvent) {
				task := ev.Tasks[0]
				require.LessOrEqual(t, len(task.ID), maxNameBytes)
				require.LessOrEqual(t, len(task.Name), maxNameBytes)
				require.LessOrEqual(t, len(strings.Join(task.Cmd, "")), maxCmdBytes+64)
				require.Len(t, task.SystemLogs, maxTaskLogs+1)
			}},
		{name: "huge command and logs", limit: 1 << 20,
			ev: events.RunEvent{State: models.SystemError, Cmd: []string{big}, SystemLog: big, Error: big},
			check: func(t *testing.T, ev events.RunEvent) {
				require.LessOrEqual(t, len(strings.Join(ev.Cmd, "")), maxCmdBytes+64)
				require.LessOrEqual(t, len(ev.SystemLog), maxLogBytes)
				require.LessOrEqual(t, len(ev.Error), maxLogBytes)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			orig := tc.ev
			got := fit(tc.ev, tc.limit, "the files are elsewhere", size)
			n, err := size(got)
			require.NoError(t, err)
			require.LessOrEqual(t, n, tc.limit)
			if tc.noteInOut {
				var note map[string]string
				require.NoError(t, json.Unmarshal(got.Outputs, &note))
				require.Contains(t, note[outputsNoteKey], "the files are elsewhere")
			}
			tc.check(t, got)
			require.Equal(t, orig.Tasks, tc.ev.Tasks, "fit changed its argument")
		})
	}
}

func TestOverLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                      string
		n, tries, handBacks       int
		known                     bool
		maxAttempts, maxHandBacks int
		wantGiveUp                bool
		wantMention               string
	}{
		{name: "first delivery", n: 1, tries: 1, known: true, maxAttempts: 3, maxHandBacks: 10},
		{name: "last attempt", n: 3, tries: 3, known: true, maxAttempts: 3, maxHandBacks: 10},
		{name: "one crash too many", n: 4, tries: 4, known: true, maxAttempts: 3, maxHandBacks: 10, wantGiveUp: true, wantMention: "attempt 4 would exceed WES_MAX_ATTEMPTS (3)"},
		{name: "hand-backs and deliveries that never started do not count", n: 6, tries: 3, handBacks: 2, known: true, maxAttempts: 3, maxHandBacks: 10},
		{name: "crashes and hand-backs", n: 7, tries: 4, handBacks: 3, known: true, maxAttempts: 3, maxHandBacks: 10, wantGiveUp: true, wantMention: "attempt 4"},
		{name: "history unknown: only the bound on deliveries", n: 13, tries: 13, known: false, maxAttempts: 3, maxHandBacks: 10},
		{name: "history unknown, over the bound", n: 14, tries: 14, known: false, maxAttempts: 3, maxHandBacks: 10, wantGiveUp: true, wantMention: "delivered 14 times"},
		{name: "handed back too often", n: 14, tries: 1, handBacks: 13, known: true, maxAttempts: 3, maxHandBacks: 10, wantGiveUp: true, wantMention: "13 of them handed back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := overLimit(tc.n, tc.tries, tc.handBacks, tc.known, tc.maxAttempts, tc.maxHandBacks)
			if !tc.wantGiveUp {
				require.Empty(t, got)
				return
			}
			require.Contains(t, got, tc.wantMention)
		})
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"max payload", fmt.Errorf("publish x: %w", nats.ErrMaxPayload), true},
		{"stream max message size", fmt.Errorf("publish x: %w", fmt.Errorf("nats: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Code: 400})), true},
		{"no responders", fmt.Errorf("publish x: %w", jetstream.ErrNoStreamResponse), false},
		{"timeout", context.DeadlineExceeded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tooLarge(tc.err))
			require.Equal(t, tc.want, permanent(tc.err))
		})
	}
	require.True(t, permanent(fmt.Errorf("%w: %w", errUnencodable, errors.New("bad json"))))
}

// TestHugeOutcomeIsRecorded: an engine whose command line, task or outputs
// are larger than a NATS message may be must still have its run's states
// recorded: commands and tasks cut, outputs replaced by a note, the message
// acknowledged only once the outcome is stored.
func TestHugeOutcomeIsRecorded(t *testing.T) {
	t.Parallel()
	f := setup(t)
	mp := int(f.nc.MaxPayload())
	huge := strings.Repeat("x", mp+1024)
	p := &testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine", huge})
		r.Task(models.TaskLog{ID: "step-1", Name: huge, Cmd: []string{"tool", huge}})
		outputs, err := json.Marshal(map[string]string{"big": huge})
		return providers.Result{Outputs: outputs}, err
	}}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	runID := f.submit(t)

	done := f.waitState(t, runID, models.Complete, 60*time.Second)
	var note map[string]string
	require.NoError(t, json.Unmarshal(done.Outputs, &note))
	require.Contains(t, note[outputsNoteKey], "more than the")
	require.Contains(t, note[outputsNoteKey], "/runs/"+runID+"/outputs")
	require.Contains(t, done.SystemLog, "the outputs object was left out")

	evs := f.runEvents(t, runID)
	var running, task bool
	for _, ev := range evs {
		if ev.State == models.Running {
			running = true
			require.Equal(t, "engine", ev.Cmd[0])
			require.Less(t, len(strings.Join(ev.Cmd, "")), 2*maxCmdBytes)
		}
		for _, tl := range ev.Tasks {
			task = true
			require.Less(t, len(tl.Name), 2*maxNameBytes)
			require.Less(t, len(strings.Join(tl.Cmd, "")), 2*maxCmdBytes)
		}
	}
	require.True(t, running, "no RUNNING event: %s", describe(evs))
	require.True(t, task, "no task event")
	require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 10*time.Second, 100*time.Millisecond)
	require.EqualValues(t, 1, p.calls.Load())
}

// TestOutcomeRefusedByTheStreamIsShrunk: a stream whose messages may be
// smaller than the connection's max_payload refuses an outcome that fits
// the connection; the outcome goes again without its outputs.
func TestOutcomeRefusedByTheStreamIsShrunk(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s, err := f.js.Stream(f.ctx, f.names.EventsStream())
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 8 << 10
	_, err = f.js.UpdateStream(f.ctx, cfg)
	require.NoError(t, err)

	p := &testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		outputs, err := json.Marshal(map[string]string{"big": strings.Repeat("x", 20<<10)})
		return providers.Result{Outputs: outputs}, err
	}}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	runID := f.submit(t)

	done := f.waitState(t, runID, models.Complete, 60*time.Second)
	require.Contains(t, done.SystemLog, "refused the event for its size")
	require.Contains(t, string(done.Outputs), outputsNoteKey)
	require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 10*time.Second, 100*time.Millisecond)
}

// TestUnrecordedOutcomeIsDeliveredAgain: when the outcome cannot reach
// JetStream in time, the run is not acknowledged: it is delivered again,
// and its outcome recorded then.
func TestUnrecordedOutcomeIsDeliveredAgain(t *testing.T) {
	t.Parallel()
	f := setup(t)
	returned := make(chan struct{})
	p := &testProvider{}
	p.run = func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		if job.Attempt == 1 {
			// Events can no longer be stored.
			require.NoError(t, f.js.DeleteStream(ctx, f.names.EventsStream()))
			defer close(returned)
		}
		return providers.Result{Outputs: json.RawMessage(`{"attempt":` + fmt.Sprint(job.Attempt) + `}`)}, nil
	}
	const reportTimeout = 2 * time.Second
	f.start(t, Config{AckWait: 5 * time.Second, ReportTimeout: reportTimeout}, p)
	runID := f.submit(t)

	select {
	case <-returned:
	case <-time.After(time.Minute):
		t.Fatal("the run did not start")
	}
	// Let the executor give up reporting, then let events be stored again.
	time.Sleep(reportTimeout + 3*time.Second)
	f.provision(t)

	done := f.waitState(t, runID, models.Complete, time.Minute)
	require.Equal(t, 2, done.Attempt)
	require.JSONEq(t, `{"attempt":2}`, string(done.Outputs))
	require.EqualValues(t, 2, p.calls.Load())
	require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 10*time.Second, 100*time.Millisecond)
}
