package models

import (
	"errors"
	"fmt"
	"testing"
)

// allowed is the transition table written out pair by pair; the test checks
// every one of the 121 pairs against ValidateTransition.
var allowed = map[[2]State]bool{
	{Unknown, Queued}: true, {Unknown, SystemError}: true, {Unknown, Canceled}: true,

	{Queued, Initializing}: true, {Queued, Canceling}: true, {Queued, Canceled}: true, {Queued, SystemError}: true,

	{Initializing, Running}: true, {Initializing, Queued}: true, {Initializing, Preempted}: true,
	{Initializing, Canceling}: true, {Initializing, Canceled}: true, {Initializing, SystemError}: true,
	{Initializing, ExecutorError}: true,

	{Running, Paused}: true, {Running, Complete}: true, {Running, ExecutorError}: true, {Running, SystemError}: true,
	{Running, Queued}: true, {Running, Preempted}: true, {Running, Canceling}: true, {Running, Canceled}: true,

	{Paused, Running}: true, {Paused, Preempted}: true, {Paused, Canceling}: true, {Paused, Canceled}: true, {Paused, SystemError}: true,

	{Preempted, Queued}: true, {Preempted, Initializing}: true, {Preempted, Canceling}: true,
	{Preempted, Canceled}: true, {Preempted, SystemError}: true,
	{Preempted, Running}: true, {Preempted, Complete}: true, {Preempted, ExecutorError}: true,

	{Canceling, Canceled}: true, {Canceling, Complete}: true, {Canceling, ExecutorError}: true, {Canceling, SystemError}: true,
}

func TestValidateTransitionEveryPair(t *testing.T) {
	t.Parallel()
	for _, from := range States {
		for _, to := range States {
			t.Run(fmt.Sprintf("%s→%s", from, to), func(t *testing.T) {
				t.Parallel()
				err := ValidateTransition(from, to)
				if want := allowed[[2]State{from, to}]; want != (err == nil) {
					t.Fatalf("ValidateTransition(%s, %s) = %v, want allowed=%v", from, to, err, want)
				}
				if err != nil {
					var te *TransitionError
					if !errors.As(err, &te) || te.From != from || te.To != to {
						t.Fatalf("error %v is not a *TransitionError{%s,%s}", err, from, to)
					}
				}
			})
		}
	}
}

func TestTerminalStatesAreFinal(t *testing.T) {
	t.Parallel()
	for _, from := range States {
		if !from.Terminal() {
			continue
		}
		for _, to := range States {
			if ValidateTransition(from, to) == nil {
				t.Errorf("terminal %s may move to %s", from, to)
			}
		}
	}
	terminal := 0
	for _, s := range States {
		if s.Terminal() {
			terminal++
		}
	}
	if terminal != 4 {
		t.Fatalf("%d terminal states, want 4 (COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED)", terminal)
	}
}

func TestValidateAttemptTransition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		from      State
		current   int
		to        State
		attempt   int
		wantErr   bool
		wantStale bool
	}{
		{"same attempt forward", Running, 1, Complete, 1, false, false},
		{"same attempt backward", Running, 1, Initializing, 1, true, false},
		{"older attempt", Running, 2, Complete, 1, true, true},
		{"new attempt after crash", Running, 1, Initializing, 2, false, false},
		{"new attempt after preempt", Preempted, 1, Initializing, 2, false, false},
		{"new attempt requeued", Running, 1, Queued, 2, false, false},
		{"new attempt cannot complete without running", Running, 1, Complete, 2, true, false},
		{"new attempt while canceling", Canceling, 1, Initializing, 2, true, false},
		{"new attempt cancels", Canceling, 1, Canceled, 2, false, false},
		{"new attempt after terminal", Complete, 1, Initializing, 2, true, false},
		{"first attempt from queued", Queued, 0, Initializing, 1, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateAttemptTransition(tt.from, tt.current, tt.to, tt.attempt)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrStaleAttempt) != tt.wantStale {
				t.Fatalf("err = %v, want stale=%v", err, tt.wantStale)
			}
		})
	}
}

func TestParseState(t *testing.T) {
	t.Parallel()
	for _, s := range States {
		got, err := ParseState(string(s))
		if err != nil || got != s {
			t.Fatalf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "queued", "DONE"} {
		if _, err := ParseState(bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseState(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
}
