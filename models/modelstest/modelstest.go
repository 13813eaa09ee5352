// Package modelstest gives tests a migrated, empty run store: a fresh
// PostgreSQL database when WES_TEST_DATABASE_URL is set (or a container when
// a Docker engine answers), a SQLite file otherwise.
package modelstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/wes-dev/wes/models"
)

// EnvDatabaseURL names the variable that points tests at a PostgreSQL server;
// each test gets its own database on it.
const EnvDatabaseURL = "WES_TEST_DATABASE_URL"

// PostgresURL returns the URL of a new, empty database, dropped when the test
// ends, on the server that WES_TEST_DATABASE_URL names or else in a
// testcontainers PostgreSQL. It skips the test, loudly, when neither exists;
// CI always sets the variable.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDatabaseURL)
	if base == "" {
		base = postgresContainer(t)
	}
	return NewPostgresDatabase(t, base)
}

// NewPostgresDatabase creates a database with a random name on the server of
// admin (a URL to any database there) and drops it when the test ends.
func NewPostgresDatabase(t testing.TB, admin string) string {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvDatabaseURL, err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to PostgreSQL at %s: %v", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "wes_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// Dialects returns the database URLs a store test runs against: SQLite
// always, PostgreSQL when available.
func Dialects(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return filepath.Join(t.TempDir(), "wes.db") },
		"postgres": func(t *testing.T) string { return PostgresURL(t) },
	}
}

// NewStore opens and migrates a store at url, closed when the test ends.
func NewStore(t testing.TB, url string) *models.Store {
	t.Helper()
	ctx := context.Background()
	s, err := models.Open(ctx, url)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}
