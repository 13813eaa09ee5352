package models

import "context"

// Classify exposes classify to the package's external tests.
var Classify = classify

// CheckSeqs exposes checkSeqs, run in a transaction of s.
func (s *Store) CheckSeqs(runs []*Run) error { return checkSeqs(s.db, runs) }

// MigrateTo applies the migrations up to version, no further, and
// MigrateDownTo rolls back those above it: a test can write rows as an
// older build did, then migrate them.
func (s *Store) MigrateTo(ctx context.Context, version int64) error {
	p, err := s.migrator()
	if err != nil {
		return err
	}
	_, err = p.UpTo(ctx, version)
	return err
}

func (s *Store) MigrateDownTo(ctx context.Context, version int64) error {
	p, err := s.migrator()
	if err != nil {
		return err
	}
	_, err = p.DownTo(ctx, version)
	return err
}

// Exec runs a statement as it is, the way an older build's queries would.
func (s *Store) Exec(ctx context.Context, sql string, args ...any) error {
	return s.db.WithContext(ctx).Exec(sql, args...).Error
}
