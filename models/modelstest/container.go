package modelstest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// One container serves every test of a package run; it is started on first
// use and reaped by testcontainers' Ryuk when the test binary exits.
var shared struct {
	once sync.Once
	url  string
	err  error
}

func postgresContainer(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		defer func() {
			if r := recover(); r != nil { // testcontainers panics without Docker
				shared.err = fmt.Errorf("docker: %v", r)
			}
		}()
		c, err := postgres.Run(ctx, "postgres:16-alpine",
			postgres.WithDatabase("postgres"), postgres.WithUsername("postgres"), postgres.WithPassword("postgres"),
			testcontainers.WithWaitStrategy(wait.ForListeningPort("5432/tcp").WithStartupTimeout(time.Minute)))
		if err != nil {
			shared.err = err
			return
		}
		shared.url, shared.err = c.ConnectionString(ctx, "sslmode=disable")
	})
	if shared.err != nil {
		t.Skipf("SKIPPED: PostgreSQL behaviour not tested: %s is not set and no Docker engine could start a container (%v); .ci/run sets it", EnvDatabaseURL, shared.err)
	}
	return shared.url
}
