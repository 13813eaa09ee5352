package models

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// MigrationStatus is one migration and whether it has been applied.
type MigrationStatus struct {
	Version int64
	Name    string
	Applied bool
}

func (s *Store) migrator() (*goose.Provider, error) {
	var (
		dialect goose.Dialect
		opts    []goose.ProviderOption
	)
	switch s.dialect {
	case dialectPostgres:
		dialect = goose.DialectPostgres
		// Two `wes migrate up` at once (say, two replicas starting) take
		// turns instead of racing.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, fmt.Errorf("migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	case dialectSQLite:
		dialect = goose.DialectSQLite3
	}
	sub, err := fs.Sub(migrationFiles, "migrations/"+s.dialect)
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(dialect, s.sqlDB, sub, opts...)
}

// Migrate applies every pending migration and returns the versions applied.
func (s *Store) Migrate(ctx context.Context) ([]int64, error) {
	p, err := s.migrator()
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate up: %w", err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// MigrationStatus lists every migration this binary knows and whether the
// database has it.
func (s *Store) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	p, err := s.migrator()
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", classify(err))
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, m := range st {
		out = append(out, MigrationStatus{
			Version: m.Source.Version,
			Name:    m.Source.Path,
			Applied: m.State == goose.StateApplied,
		})
	}
	return out, nil
}

// CheckSchema returns an error wrapping ErrSchemaOutdated, saying what to
// run, unless the database has every migration this binary knows.
func (s *Store) CheckSchema(ctx context.Context) error {
	p, err := s.migrator()
	if err != nil {
		return err
	}
	current, target, err := p.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", classify(err))
	}
	if current < target {
		return fmt.Errorf("%w: the database is at version %d, this binary needs %d; run `wes migrate up` with the same WES_DATABASE_URL",
			ErrSchemaOutdated, current, target)
	}
	return nil
}

// DeployedAt returns when the database's first migration was applied: when
// the service was deployed, whatever its processes' restarts since.
func (s *Store) DeployedAt(ctx context.Context) (time.Time, error) {
	p, err := s.migrator()
	if err != nil {
		return time.Time{}, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("migration status: %w", classify(err))
	}
	var first time.Time
	for _, m := range st {
		if m.State == goose.StateApplied && (first.IsZero() || m.AppliedAt.Before(first)) {
			first = m.AppliedAt
		}
	}
	return first.UTC(), nil
}
