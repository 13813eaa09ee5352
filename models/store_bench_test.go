package models_test

import (
	"context"
	"encoding/json"
	"fmt"
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
