package apiserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
)

// countingStore counts commits on a real store.
type countingStore struct {
	*models.Store
	commits atomic.Int64
}

func (c *countingStore) CreateRuns(ctx context.Context, runs []*models.Run, outbox []*models.OutboxMessage) error {
	c.commits.Add(1)
	return c.Store.CreateRuns(ctx, runs, outbox)
}

func testRun(id, url string) (*models.Run, *models.OutboxMessage) {
	now := time.Now().UTC()
	return &models.Run{
			ID: id, State: models.Queued, Engine: "mock", CreatedAt: now, UpdatedAt: now,
			Request: models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: url},
		},
		&models.OutboxMessage{Subject: "wes.runs.submitted.mock", MsgID: id, Payload: []byte(`{}`)}
}

func TestGroupCommit(t *testing.T) {
	for name, dsn := range modelstest.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			store := &countingStore{Store: modelstest.NewStore(t, dsn(t))}
			var (
				mu        sync.Mutex
				delivered []models.OutboxMessage
			)
			g := &groupCommit{store: store, maxBatch: 16, maxFlushers: 2, timeout: 10 * time.Second,
				deliver: func(msgs ...models.OutboxMessage) {
					mu.Lock()
					delivered = append(delivered, msgs...)
					mu.Unlock()
				}}

			// Many at once: all stored, in fewer commits than runs.
			const n = 200
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					run, msg := testRun(fmt.Sprintf("gc-%d", i), "https://example.com/wf.cwl")
					errs[i] = g.create(run, msg)
				})
			}
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "run %d", i)
			}
			counts, err := store.StateCounts(context.Background(), "")
			require.NoError(t, err)
			var total int64
			for _, c := range counts {
				total += c
			}
			require.EqualValues(t, n, counts[models.Queued], "every run is stored, once")
			require.EqualValues(t, n, total)
			require.Len(t, delivered, n, "every committed message goes to the relay, with its seq")
			for _, m := range delivered {
				require.NotZero(t, m.Seq)
			}
			require.Less(t, store.commits.Load(), int64(n), "concurrent submissions share commits")
			t.Logf("%d runs in %d commits", n, store.commits.Load())

			// A run the database refuses fails alone; the others of its
			// batch are stored.
			if name != "postgres" {
				return // only PostgreSQL refuses NUL in text
			}
			errs = make([]error, 20)
			for i := range 20 {
				wg.Go(func() {
					url := "https://example.com/wf.cwl"
					if i == 7 {
						url = "https://example.com/\x00.cwl"
					}
					run, msg := testRun(fmt.Sprintf("gc-bad-%d", i), url)
					errs[i] = g.create(run, msg)
				})
			}
			wg.Wait()
			for i, err := range errs {
				if i == 7 {
					require.Error(t, err)
					continue
				}
				require.NoError(t, err, "run %d", i)
			}
			_, err = store.GetRun(context.Background(), "gc-bad-7")
			require.ErrorIs(t, err, models.ErrNotFound)
		})
	}
}
