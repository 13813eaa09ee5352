package models_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
)

// BenchmarkUpdateRuns measures the projector's write: a batch of 64 run
// updates (a state change each, as the projector applies events) on
// PostgreSQL, against runs whose requests carry realistic parameters and
// tags. One op is one batch; it reports the time per update.
//
//	WES_TEST_DATABASE_URL=postgres://… go test -run '^$' -bench UpdateRuns ./models
func BenchmarkUpdateRuns(b *testing.B) {
	ctx := context.Background()
	s := modelstest.NewStore(b, modelstest.PostgresURL(b))
	const nRuns, batch = 4096, 64
	params := json.RawMessage(`{"input":{"class":"File","location":"https://example.com/data/` +
		strings.Repeat("x", 120) + `.fastq"},"threads":4,"reference":"GRCh38"}`)
	runs := make([]*models.Run, nRuns)
	for i := range runs {
		runs[i] = &models.Run{
			ID: fmt.Sprintf("bench-%05d", i), State: models.Queued, Engine: "mock", Owner: "alice", CreatedAt: time.Now().UTC(),
			Request: models.RunRequest{
				WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "https://example.com/workflows/align.cwl",
				WorkflowParams: params, Tags: map[string]string{"project": "p1", "sample": fmt.Sprint(i)},
				WorkflowEngineParameters: map[string]*string{},
			},
		}
	}
	for i := 0; i < nRuns; i += 256 {
		if err := s.CreateRuns(ctx, runs[i:i+256], nil); err != nil {
			b.Fatal(err)
		}
	}
	var seq uint64
	step := func(r *models.Run) ([]models.TaskLog, error) {
		seq++
		now := time.Now().UTC()
		if r.StartTime == nil {
			r.StartTime = &now
		}
		r.State, r.Attempt, r.Executor, r.LastEventSeq = models.Running, 1, "executor-1", seq
		r.Cmd = []string{"cwltool", "--outdir", "/runs/out", "align.cwl", "params.json"}
		return nil, nil
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		updates := make([]models.RunUpdate, batch)
		for j := range updates {
			updates[j] = models.RunUpdate{ID: runs[(i*batch+j)%nRuns].ID, Fn: step}
		}
		if _, err := s.UpdateRuns(ctx, updates); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "µs/update")
}

// BenchmarkListRunsByTag measures one page (50) of the run list filtered by
// a tag, in 200,000 runs of which 10,000 carry the tag: the tag alone, on a
// later page, with an owner who has 20 of them (every list of an
// authenticated user names its owner), and with a state none of them is in.
//
//	WES_TEST_DATABASE_URL=postgres://… go test -run '^$' -bench ListRunsByTag ./models
func BenchmarkListRunsByTag(b *testing.B) {
	for dialect, url := range map[string]func() string{
		"postgres": func() string { return modelstest.PostgresURL(b) },
		"sqlite":   func() string { return filepath.Join(b.TempDir(), "wes.db") },
	} {
		b.Run(dialect, func(b *testing.B) { benchmarkListRunsByTag(b, modelstest.NewStore(b, url())) })
	}
}

func benchmarkListRunsByTag(b *testing.B, s *models.Store) {
	ctx := context.Background()
	middle := storeTaggedRuns(b, s)
	tag := map[string]string{"project": "p1"}
	for _, bc := range []struct {
		name string
		q    models.ListQuery
		want int
	}{
		{"tag", models.ListQuery{Tags: tag}, 50},
		{"tag/later-page", models.ListQuery{Tags: tag, Before: middle}, 50},
		{"tag+owner", models.ListQuery{Tags: tag, Owner: "alice"}, 20},
		{"tag+owner/later-page", models.ListQuery{Tags: tag, Owner: "alice", Before: middle}, 10},
		{"tag+state", models.ListQuery{Tags: tag, State: models.Running}, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.q.Limit = 50
			for b.Loop() {
				runs, _, err := s.ListRuns(ctx, bc.q)
				if err != nil {
					b.Fatal(err)
				}
				if len(runs) != bc.want {
					b.Fatalf("%d runs listed, want %d", len(runs), bc.want)
				}
			}
		})
	}
}

// storeTaggedRuns stores 200,000 runs, one in 20 tagged project:p1; alice
// owns 20 of those and 2,000 others, and one run in 100 is RUNNING (none
// tagged). It returns a cursor half-way down.
func storeTaggedRuns(tb testing.TB, s *models.Store) (middle int64) {
	ctx := context.Background()
	const nRuns, batch = 200_000, 1000
	params := json.RawMessage(`{"input":{"class":"File","location":"https://example.com/data/` +
		strings.Repeat("x", 120) + `.fastq"},"threads":4,"reference":"GRCh38"}`)
	for i := 0; i < nRuns; i += batch {
		runs := make([]*models.Run, batch)
		for j := range runs {
			n := i + j
			r := &models.Run{
				ID: fmt.Sprintf("bench-%06d", n), State: models.Complete, Engine: "mock", CreatedAt: time.Now().UTC(),
				Owner: fmt.Sprintf("user-%d", n%97),
				Request: models.RunRequest{
					WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "https://example.com/workflows/align.cwl",
					WorkflowParams: params, Tags: map[string]string{"sample": fmt.Sprint(n), "batch": fmt.Sprint(n / 1000)},
				},
			}
			if n%10_000 == 0 || n%100 == 1 {
				r.Owner = "alice"
			}
			if n%20 == 0 {
				r.Request.Tags["project"] = "p1"
			}
			if n%100 == 3 {
				r.State = models.Running
			}
			runs[j] = r
		}
		if err := s.CreateRuns(ctx, runs, nil); err != nil {
			tb.Fatal(err)
		}
		if i == nRuns/2 {
			middle = runs[0].Seq
		}
	}
	if s.Dialect() == "postgres" {
		// As autovacuum would have by then: the planner needs statistics.
		if err := s.Exec(ctx, "ANALYZE"); err != nil {
			tb.Fatal(err)
		}
	}
	return middle
}
