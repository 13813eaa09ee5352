// Package models owns the run record and everything that decides what a run
// may become: the WES State enum, the one transition table, typed errors, the
// GORM models, the store (queries, keyset pagination, the outbox) and the
// embedded, versioned migrations for each SQL dialect.
//
// It must not know NATS, HTTP or any workflow engine.
package models
