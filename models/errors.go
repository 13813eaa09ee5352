package models

import "errors"

// Sentinel errors of the run store and the state machine. Callers test them
// with errors.Is; the API maps them to HTTP status codes in one place.
var (
	// ErrNotFound: no run (or task) with that id.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the caller asked for something malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrStaleAttempt: an event of an attempt that is no longer current.
	ErrStaleAttempt = errors.New("stale attempt")
	// ErrSchemaOutdated: the database schema is older than this binary.
	ErrSchemaOutdated = errors.New("database schema is out of date")
	// ErrUnavailable: the database could not be reached.
	ErrUnavailable = errors.New("database unavailable")
	// ErrSkip, returned by an UpdateRun closure, leaves the run unchanged.
	ErrSkip = errors.New("no change")
)
