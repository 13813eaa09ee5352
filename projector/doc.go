// Package projector turns run events into the rows the API reads. It is the
// only writer of run state after submit: it consumes WES_EVENTS in order,
// checks every state change against the transition table, drops (and
// counts) what the table refuses or what belongs to an older attempt, and
// makes re-applying an event a no-op.
//
// It knows models and events; it must not know HTTP or any engine.
package projector
