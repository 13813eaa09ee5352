package models

import (
	"fmt"
	"slices"
)

// State is a WES run state (WES 1.1.0 `State`).
type State string

// The eleven WES states.
const (
	Unknown       State = "UNKNOWN"
	Queued        State = "QUEUED"
	Initializing  State = "INITIALIZING"
	Running       State = "RUNNING"
	Paused        State = "PAUSED"
	Complete      State = "COMPLETE"
	ExecutorError State = "EXECUTOR_ERROR"
	SystemError   State = "SYSTEM_ERROR"
	Canceled      State = "CANCELED"
	Canceling     State = "CANCELING"
	Preempted     State = "PREEMPTED"
)

// States lists every WES state in the order of the specification.
var States = [...]State{Unknown, Queued, Initializing, Running, Paused, Complete, ExecutorError, SystemError, Canceled, Canceling, Preempted}

// ParseState returns the State named s (exact, upper case) or an error.
func ParseState(s string) (State, error) {
	st := State(s)
	if slices.Contains(States[:], st) {
		return st, nil
	}
	return "", fmt.Errorf("%w: unknown state %q", ErrInvalid, s)
}

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool {
	switch s {
	case Complete, ExecutorError, SystemError, Canceled:
		return true
	}
	return false
}

// transitions is the one table that decides which state may follow which
// within one attempt of a run. Terminal states have no entry: they are final.
//
//	QUEUED → INITIALIZING → RUNNING → COMPLETE | EXECUTOR_ERROR | SYSTEM_ERROR
//	INITIALIZING → EXECUTOR_ERROR      (the executor refused what the run asks)
//	any non-terminal → CANCELING → CANCELED (or the outcome that beat the cancel)
//	INITIALIZING | RUNNING → PREEMPTED → QUEUED  (an executor gave the run back)
//	INITIALIZING | RUNNING → QUEUED              (our failure, retried)
var transitions = map[State][]State{
	Unknown:      {Queued, SystemError, Canceled},
	Queued:       {Initializing, Canceling, Canceled, SystemError},
	Initializing: {Running, ExecutorError, Queued, Preempted, Canceling, Canceled, SystemError},
	Running:      {Paused, Complete, ExecutorError, SystemError, Queued, Preempted, Canceling, Canceled},
	Paused:       {Running, Preempted, Canceling, Canceled, SystemError},
	// A run is PREEMPTED when its executor gave it back or (by the
	// reconciler) when its executor stopped answering; an executor thought
	// gone that reports after all is believed.
	Preempted: {Queued, Initializing, Running, Complete, ExecutorError, SystemError, Canceling, Canceled},
	// A run being canceled ends CANCELED, unless its engine finished first:
	// then the truthful outcome wins rather than leaving the run CANCELING.
	Canceling: {Canceled, Complete, ExecutorError, SystemError},
}

// TransitionError is returned for a transition the table refuses.
type TransitionError struct {
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("invalid state transition from %s to %s", e.From, e.To)
}

// ValidateTransition returns nil if a run in state from may move to state to
// within the same attempt, and a *TransitionError otherwise. A transition to
// the same state is refused too: applying an event twice must be a no-op.
func ValidateTransition(from, to State) error {
	if slices.Contains(transitions[from], to) {
		return nil
	}
	return &TransitionError{From: from, To: to}
}

// ValidateAttemptTransition extends ValidateTransition with attempts. An
// event of an older attempt is refused with ErrStaleAttempt. An event of a
// newer attempt means the previous attempt is over and the run went back to
// the queue (a redelivery after a crash or a hand-back), so it is checked as
// if the run were QUEUED, unless a cancel is already under way.
func ValidateAttemptTransition(from State, current int, to State, attempt int) error {
	switch {
	case attempt < current:
		return fmt.Errorf("%w: event of attempt %d, run is at attempt %d", ErrStaleAttempt, attempt, current)
	case attempt > current && !from.Terminal() && from != Canceling:
		if to == Queued {
			return nil
		}
		return ValidateTransition(Queued, to)
	}
	return ValidateTransition(from, to)
}
