package models

// Classify exposes classify to the package's external tests.
var Classify = classify

// CheckSeqs exposes checkSeqs, run in a transaction of s.
func (s *Store) CheckSeqs(runs []*Run) error { return checkSeqs(s.db, runs) }
