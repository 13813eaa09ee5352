package events

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
)

func TestReplayFollowsTheProjector(t *testing.T) {
	ev := func(attempt int, st models.State) RunEvent {
		return RunEvent{Attempt: attempt, State: st, Source: "x"}
	}
	for _, tc := range []struct {
		name        string
		history     []RunEvent
		wantState   models.State
		wantAttempt int
	}{
		{name: "no events", wantState: models.Queued},
		{name: "running", history: []RunEvent{ev(1, models.Initializing), ev(1, models.Running)},
			wantState: models.Running, wantAttempt: 1},
		{name: "a later attempt took over; the earlier one's outcome is stale",
			history:   []RunEvent{ev(1, models.Initializing), ev(2, models.Initializing), ev(1, models.Complete)},
			wantState: models.Initializing, wantAttempt: 2},
		{name: "an outcome before the takeover ends the run",
			history:   []RunEvent{ev(1, models.Initializing), ev(1, models.Running), ev(1, models.ExecutorError), ev(2, models.Initializing)},
			wantState: models.ExecutorError, wantAttempt: 1},
		{name: "the API's events concern the current attempt",
			history:   []RunEvent{ev(1, models.Initializing), ev(1, models.Running), {State: models.Canceling, Source: SourceAPI}, ev(1, models.Canceled)},
			wantState: models.Canceled, wantAttempt: 1},
		{name: "events without a state change nothing",
			history:   []RunEvent{ev(1, models.Initializing), ev(1, models.Running), {Attempt: 3, Source: "y"}},
			wantState: models.Running, wantAttempt: 1},
		{name: "reconciler preempted, the executor reported after all",
			history:   []RunEvent{ev(1, models.Initializing), ev(1, models.Running), {Attempt: 1, State: models.Preempted, Source: SourceAPI}, ev(1, models.Complete)},
			wantState: models.Complete, wantAttempt: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, n := Replay(tc.history)
			require.Equal(t, tc.wantState, st)
			require.Equal(t, tc.wantAttempt, n)
		})
	}
}
