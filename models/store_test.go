package models_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
)

// The same behaviour suite runs on SQLite and on PostgreSQL.
func TestStore(t *testing.T) {
	t.Parallel()
	for dialect, dsn := range modelstest.Dialects(t) {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			url := dsn(t)
			s := modelstest.NewStore(t, url)
			for name, fn := range map[string]func(*testing.T, *models.Store){
				"CreateGet":     testCreateGet,
				"List":          testList,
				"ListOwnerTags": testListOwnerTags,
				"StateCounts":   testStateCounts,
				"UpdateRun":     testUpdateRun,
				"RequestCancel": testRequestCancel,
				"Outbox":        testOutbox,
				"CreateRuns":    testCreateRuns,
				"UpdateRuns":    testUpdateRuns,
				"ProjectRuns":   testProjectRuns,
				"StaleRuns":     testStaleRuns,
				"ManyTasks":     testManyTasks,
				"CheckSeqs":     testCheckSeqs,
			} {
				t.Run(name, func(t *testing.T) {
					// Subtests share one database: each works on its own runs.
					fn(t, s)
				})
			}
			t.Run("Schema", func(t *testing.T) { testSchema(t, url) })
		})
	}
}

func newRun(id string, tags map[string]string) *models.Run {
	return &models.Run{
		ID:    id,
		State: models.Queued,
		Request: models.RunRequest{
			WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "wf.cwl",
			WorkflowParams: json.RawMessage(`{"x":1}`), Tags: tags,
		},
		Engine: "mock",
	}
}

func testCreateGet(t *testing.T, s *models.Store) {
	ctx := context.Background()
	run := newRun("cg-1", map[string]string{"a": "b"})
	run.Attachments = []models.Attachment{{Name: "dir/wf.cwl", Key: "k", Size: 3}}
	msg := &models.OutboxMessage{Subject: "wes.runs.submitted.mock", MsgID: "cg-1", Payload: []byte("{}")}
	require.NoError(t, s.CreateRun(ctx, run, msg))
	require.NotZero(t, run.Seq)
	require.NotZero(t, msg.Seq)

	got, err := s.GetRun(ctx, "cg-1")
	require.NoError(t, err)
	require.Equal(t, models.Queued, got.State)
	require.JSONEq(t, `{"x":1}`, string(got.Request.WorkflowParams))
	require.Equal(t, map[string]string{"a": "b"}, got.Request.Tags)
	require.Equal(t, run.Attachments, got.Attachments)
	require.Nil(t, got.ExitCode)
	require.Nil(t, got.StartTime)

	_, err = s.GetRun(ctx, "nope")
	require.ErrorIs(t, err, models.ErrNotFound)

	// The id is unique: a second insert fails and leaves no outbox row.
	before, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Error(t, s.CreateRun(ctx, newRun("cg-1", nil), &models.OutboxMessage{Subject: "x", MsgID: "y", Payload: []byte("{}")}))
	after, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Equal(t, before, after, "a failed submit must write nothing")
}

func testList(t *testing.T, s *models.Store) {
	ctx := context.Background()
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("list-%d", i)
		tags := map[string]string{"suite": "list", "parity": []string{"even", "odd"}[i%2]}
		require.NoError(t, s.CreateRun(ctx, newRun(id, tags)))
		ids = append(ids, id)
	}
	// Page through with size 3: newest first, no gaps, no repeats.
	var seen []string
	var before int64
	for page := 0; ; page++ {
		runs, next, err := s.ListRuns(ctx, models.ListQuery{Limit: 3, Before: before, Tags: map[string]string{"suite": "list"}})
		require.NoError(t, err)
		require.LessOrEqual(t, len(runs), 3)
		for _, r := range runs {
			seen = append(seen, r.ID)
		}
		if next == 0 {
			break
		}
		before = next
		require.Less(t, page, 5, "pagination does not end")
	}
	require.Equal(t, []string{"list-6", "list-5", "list-4", "list-3", "list-2", "list-1", "list-0"}, seen)

	runs, _, err := s.ListRuns(ctx, models.ListQuery{Limit: 10, Tags: map[string]string{"suite": "list", "parity": "odd"}})
	require.NoError(t, err)
	require.Len(t, runs, 3)
	for _, r := range runs {
		require.Equal(t, "odd", r.Request.Tags["parity"])
	}

	runs, _, err = s.ListRuns(ctx, models.ListQuery{Limit: 10, State: models.Complete, Tags: map[string]string{"suite": "list"}})
	require.NoError(t, err)
	require.Empty(t, runs)

	_, _, err = s.ListRuns(ctx, models.ListQuery{Limit: 0})
	require.ErrorIs(t, err, models.ErrInvalid)
}

// listIDs pages through q, q.Limit runs a page, and returns the ids listed.
func listIDs(t *testing.T, s *models.Store, q models.ListQuery) []string {
	t.Helper()
	var ids []string
	for page := 0; ; page++ {
		runs, next, err := s.ListRuns(context.Background(), q)
		require.NoError(t, err)
		require.LessOrEqual(t, len(runs), q.Limit)
		for _, r := range runs {
			ids = append(ids, r.ID)
		}
		if next == 0 {
			return ids
		}
		q.Before = next
		require.Less(t, page, 100, "pagination does not end")
	}
}

// A tag filter with an owner lists that owner's runs with the tag only,
// newest first, page after page; the tags index carries each run's own
// owner, whatever the others of its batch.
func testListOwnerTags(t *testing.T, s *models.Store) {
	ctx := context.Background()
	owners := []string{"ot-alice", "ot-bob", ""}
	type made struct {
		id, owner, color string
		state            models.State
	}
	var all []made // newest first
	var batch []*models.Run
	for i := range 12 {
		m := made{
			id: fmt.Sprintf("ot-%02d", i), owner: owners[i%3],
			color: []string{"red", "blue"}[i%2], state: []models.State{models.Queued, models.Complete}[i/2%2],
		}
		all = append([]made{m}, all...)
		r := newRun(m.id, map[string]string{"suite": "owner-tags", "color": m.color})
		r.Owner, r.State = m.owner, m.state
		batch = append(batch, r)
	}
	// One batch of mixed owners, and runs of their own.
	require.NoError(t, s.CreateRuns(ctx, batch[:8], nil))
	for _, r := range batch[8:] {
		require.NoError(t, s.CreateRun(ctx, r))
	}
	want := func(keep func(made) bool) []string {
		var ids []string
		for _, m := range all {
			if keep(m) {
				ids = append(ids, m.id)
			}
		}
		return ids
	}
	suite := map[string]string{"suite": "owner-tags"}
	for _, tc := range []struct {
		name string
		q    models.ListQuery
		want []string
	}{
		{"owner", models.ListQuery{Owner: "ot-alice", Tags: suite},
			want(func(m made) bool { return m.owner == "ot-alice" })},
		{"other owner", models.ListQuery{Owner: "ot-bob", Tags: suite},
			want(func(m made) bool { return m.owner == "ot-bob" })},
		{"owner and two tags", models.ListQuery{Owner: "ot-alice", Tags: map[string]string{"suite": "owner-tags", "color": "red"}},
			want(func(m made) bool { return m.owner == "ot-alice" && m.color == "red" })},
		{"owner, tag and state", models.ListQuery{Owner: "ot-bob", State: models.Complete, Tags: suite},
			want(func(m made) bool { return m.owner == "ot-bob" && m.state == models.Complete })},
		{"owner without such runs", models.ListQuery{Owner: "ot-carol", Tags: suite}, nil},
		{"owner, no such tag value", models.ListQuery{Owner: "ot-alice", Tags: map[string]string{"suite": "none"}}, nil},
		{"no owner", models.ListQuery{Tags: suite},
			want(func(made) bool { return true })},
		{"no owner, tag and state", models.ListQuery{State: models.Queued, Tags: map[string]string{"suite": "owner-tags", "color": "blue"}},
			want(func(m made) bool { return m.state == models.Queued && m.color == "blue" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 5, 100} {
				q := tc.q
				q.Limit = limit
				require.Equal(t, tc.want, listIDs(t, s, q), "page size %d", limit)
			}
		})
	}
}

func testStateCounts(t *testing.T, s *models.Store) {
	ctx := context.Background()
	run := newRun("sc-1", nil)
	run.Owner = "alice-counts"
	require.NoError(t, s.CreateRun(ctx, run))
	counts, err := s.StateCounts(ctx, "alice-counts")
	require.NoError(t, err)
	require.Len(t, counts, 11)
	require.Equal(t, int64(1), counts[models.Queued])
	require.Equal(t, int64(0), counts[models.Complete])
}

func testUpdateRun(t *testing.T, s *models.Store) {
	ctx := context.Background()
	run := newRun("up-1", map[string]string{"k": "v"})
	run.CreatedAt = time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	run.UpdatedAt = run.CreatedAt
	run.Owner = "alice"
	run.Attachments = []models.Attachment{{Name: "wf.cwl", Key: "k", Size: 3}}
	require.NoError(t, s.CreateRun(ctx, run))
	code := 0
	start := time.Date(2026, 11, 29, 5, 0, 0, 123456000, time.UTC)
	err := s.UpdateRun(ctx, "up-1", func(r *models.Run) ([]models.TaskLog, error) {
		// fn sees the run's progress, id and engine, never its request.
		require.Equal(t, "up-1", r.ID)
		require.Equal(t, "mock", r.Engine)
		require.Equal(t, models.Queued, r.State)
		require.Zero(t, r.Request.WorkflowURL)
		r.State, r.ExitCode, r.LastEventSeq, r.Attempt = models.Complete, &code, 9, 2
		r.Outputs = json.RawMessage(`{"out":"x"}`)
		r.StartTime, r.EndTime = &start, &start
		r.Cmd, r.SystemLogs = []string{"cwltool", "wf.cwl"}, []string{"began"}
		r.ErrorMessage, r.Executor = "none", "ex-1"
		// Not progress: not stored.
		r.Owner, r.Request.WorkflowURL, r.CancelRequested = "mallory", "evil.cwl", true
		return []models.TaskLog{{ID: "t1", Name: "step one"}, {ID: "t2", Name: "step two"}}, nil
	})
	require.NoError(t, err)
	got, err := s.GetRun(ctx, "up-1")
	require.NoError(t, err)
	require.Equal(t, 2, got.Attempt)
	require.Equal(t, 0, *got.ExitCode)
	require.True(t, start.Equal(*got.StartTime), "start %v", got.StartTime)
	require.True(t, start.Equal(*got.EndTime), "end %v", got.EndTime)
	require.Equal(t, []string{"cwltool", "wf.cwl"}, got.Cmd)
	require.Equal(t, []string{"began"}, got.SystemLogs)
	require.Equal(t, "none", got.ErrorMessage)
	require.Equal(t, "ex-1", got.Executor)
	require.Equal(t, "alice", got.Owner)
	require.Equal(t, "wf.cwl", got.Request.WorkflowURL)
	require.JSONEq(t, `{"x":1}`, string(got.Request.WorkflowParams))
	require.Equal(t, map[string]string{"k": "v"}, got.Request.Tags)
	require.Equal(t, run.Attachments, got.Attachments)
	require.False(t, got.CancelRequested)
	require.True(t, got.UpdatedAt.After(run.CreatedAt.Add(30*time.Minute)), "updated_at %v", got.UpdatedAt)
	require.True(t, run.CreatedAt.Equal(got.CreatedAt), "created_at %v", got.CreatedAt)
	// Upsert: the same task id again updates, never duplicates. What fn
	// clears (as a new attempt clears its command and exit code) is cleared.
	err = s.UpdateRun(ctx, "up-1", func(r *models.Run) ([]models.TaskLog, error) {
		require.Equal(t, []string{"cwltool", "wf.cwl"}, r.Cmd)
		r.Cmd, r.ExitCode, r.EndTime = nil, nil, nil
		return []models.TaskLog{{ID: "t1", Name: "step one", ExitCode: &code}}, nil
	})
	require.NoError(t, err)
	got, err = s.GetRun(ctx, "up-1")
	require.NoError(t, err)
	require.Nil(t, got.Cmd)
	require.Nil(t, got.ExitCode)
	require.Nil(t, got.EndTime)
	require.NotNil(t, got.StartTime)

	got, err = s.GetRun(ctx, "up-1")
	require.NoError(t, err)
	require.Equal(t, models.Complete, got.State)
	require.Equal(t, uint64(9), got.LastEventSeq)
	require.JSONEq(t, `{"out":"x"}`, string(got.Outputs))

	tasks, next, err := s.ListTasks(ctx, "up-1", 0, 1)
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	require.Equal(t, "t1", tasks[0].ID)
	require.Equal(t, 0, *tasks[0].ExitCode)
	tasks, next, err = s.ListTasks(ctx, "up-1", next, 1)
	require.NoError(t, err)
	require.Equal(t, "t2", tasks[0].ID)
	require.Zero(t, next)

	task, err := s.GetTask(ctx, "up-1", "t2")
	require.NoError(t, err)
	require.Equal(t, "step two", task.Name)
	_, err = s.GetTask(ctx, "up-1", "t3")
	require.ErrorIs(t, err, models.ErrNotFound)

	// ErrSkip writes nothing.
	err = s.UpdateRun(ctx, "up-1", func(r *models.Run) ([]models.TaskLog, error) {
		r.State = models.Running
		return nil, models.ErrSkip
	})
	require.ErrorIs(t, err, models.ErrSkip)
	got, err = s.GetRun(ctx, "up-1")
	require.NoError(t, err)
	require.Equal(t, models.Complete, got.State)

	err = s.UpdateRun(ctx, "missing", func(*models.Run) ([]models.TaskLog, error) { return nil, nil })
	require.ErrorIs(t, err, models.ErrNotFound)
}

func testRequestCancel(t *testing.T, s *models.Store) {
	ctx := context.Background()
	require.NoError(t, s.CreateRun(ctx, newRun("rc-1", nil)))
	before, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	mk := func(r *models.Run) (*models.OutboxMessage, error) {
		return &models.OutboxMessage{Subject: "ev", MsgID: r.ID + ".cancel", Payload: []byte("{}")}, nil
	}
	run, changed, err := s.RequestCancel(ctx, "rc-1", mk)
	require.NoError(t, err)
	require.True(t, changed)
	require.True(t, run.CancelRequested)
	_, changed, err = s.RequestCancel(ctx, "rc-1", mk)
	require.NoError(t, err)
	require.False(t, changed, "a second cancel must be a no-op")
	after, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Equal(t, before+1, after)

	_, _, err = s.RequestCancel(ctx, "missing", mk)
	require.ErrorIs(t, err, models.ErrNotFound)

	// Builder errors roll back the flag.
	require.NoError(t, s.CreateRun(ctx, newRun("rc-2", nil)))
	boom := errors.New("boom")
	_, _, err = s.RequestCancel(ctx, "rc-2", func(*models.Run) (*models.OutboxMessage, error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	got, err := s.GetRun(ctx, "rc-2")
	require.NoError(t, err)
	require.False(t, got.CancelRequested)
}

// StaleRuns: runs waiting for an executor, unchanged since the cut-off,
// whose message left the outbox; subtests share the database, so only
// this test's runs are looked at.
func testStaleRuns(t *testing.T, s *models.Store) {
	ctx := context.Background()
	mine := func(runs []models.Run) []string {
		var ids []string
		for _, r := range runs {
			if strings.HasPrefix(r.ID, "stale-") {
				ids = append(ids, r.ID)
			}
		}
		return ids
	}
	msg := &models.OutboxMessage{Subject: "a", MsgID: "stale-outbox", Payload: []byte(`{}`)}
	require.NoError(t, s.CreateRun(ctx, newRun("stale-outbox", nil), msg))
	for _, id := range []string{"stale-queued", "stale-preempted", "stale-running"} {
		require.NoError(t, s.CreateRun(ctx, newRun(id, nil)))
	}
	for id, st := range map[string]models.State{"stale-preempted": models.Preempted, "stale-running": models.Running} {
		require.NoError(t, s.UpdateRun(ctx, id, func(r *models.Run) ([]models.TaskLog, error) {
			r.State = st
			return nil, nil
		}))
	}
	// Cut-offs in other zones than the database's: SQLite compares the
	// text of times.
	west, east := time.FixedZone("UTC-5", -5*3600), time.FixedZone("UTC+9", 9*3600)
	runs, err := s.StaleRuns(ctx, time.Now().Add(-time.Minute).In(east), 0, 1000)
	require.NoError(t, err)
	require.Empty(t, mine(runs), "nothing is stale a minute before it was created")

	cut := time.Now().Add(time.Second).In(west)
	runs, err = s.StaleRuns(ctx, cut, 0, 1000)
	require.NoError(t, err)
	require.Equal(t, []string{"stale-queued", "stale-preempted"}, mine(runs), "waiting runs, not one held or still in the outbox, in seq order")
	require.NoError(t, s.DeleteOutbox(ctx, msg.Seq))
	runs, err = s.StaleRuns(ctx, cut, 0, 1000)
	require.NoError(t, err)
	require.Equal(t, []string{"stale-outbox", "stale-queued", "stale-preempted"}, mine(runs))
}

func testOutbox(t *testing.T, s *models.Store) {
	ctx := context.Background()
	msg := &models.OutboxMessage{Subject: "a", MsgID: "ob-1", Payload: []byte(`{"n":1}`)}
	require.NoError(t, s.CreateRun(ctx, newRun("ob-1", nil), msg))
	require.NotZero(t, msg.Seq, "the caller learns the seq of what it inserted")

	// A sweep leaves messages younger than its cut-off to whoever wrote them.
	msgs, err := s.PendingOutbox(ctx, 1000, msg.CreatedAt.Add(-time.Second))
	require.NoError(t, err)
	for _, m := range msgs {
		require.NotEqual(t, "ob-1", m.MsgID)
	}
	msgs, err = s.PendingOutbox(ctx, 1000, time.Now().Add(time.Second))
	require.NoError(t, err)
	var found *models.OutboxMessage
	for i := range msgs {
		if msgs[i].MsgID == "ob-1" {
			found = &msgs[i]
		}
	}
	require.NotNil(t, found)
	require.Equal(t, msg.Seq, found.Seq)
	require.Equal(t, `{"n":1}`, string(found.Payload))
	require.NoError(t, s.DeleteOutbox(ctx, found.Seq))
	msgs, err = s.PendingOutbox(ctx, 1000, time.Now().Add(time.Second))
	require.NoError(t, err)
	for _, m := range msgs {
		require.NotEqual(t, "ob-1", m.MsgID)
	}
}

func testCreateRuns(t *testing.T, s *models.Store) {
	ctx := context.Background()
	var runs []*models.Run
	var msgs []*models.OutboxMessage
	for i := range 50 {
		id := fmt.Sprintf("batch-%d", i)
		runs = append(runs, newRun(id, map[string]string{"batch": "yes", "i": strconv.Itoa(i)}))
		msgs = append(msgs, &models.OutboxMessage{Subject: "s", MsgID: id, Payload: []byte("{}")})
	}
	require.NoError(t, s.CreateRuns(ctx, runs, msgs))
	seen := map[int64]bool{}
	for i, r := range runs {
		require.NotZero(t, r.Seq)
		require.NotZero(t, msgs[i].Seq)
		require.False(t, seen[r.Seq], "distinct seqs")
		seen[r.Seq] = true
	}
	list, _, err := s.ListRuns(ctx, models.ListQuery{Limit: 100, Tags: map[string]string{"batch": "yes", "i": "7"}})
	require.NoError(t, err)
	require.Len(t, list, 1, "the tag index covers every run of the batch")
	require.Equal(t, "batch-7", list[0].ID)

	// All or nothing: one bad run (a duplicate id) stores none of the batch.
	bad := []*models.Run{newRun("batch-new", nil), newRun("batch-3", nil)}
	require.Error(t, s.CreateRuns(ctx, bad, []*models.OutboxMessage{{Subject: "s", MsgID: "batch-new", Payload: []byte("{}")}}))
	_, err = s.GetRun(ctx, "batch-new")
	require.ErrorIs(t, err, models.ErrNotFound)
}

func testSchema(t *testing.T, url string) {
	ctx := context.Background()
	s, err := models.Open(ctx, url)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.CheckSchema(ctx), "the suite migrated this database")
	applied, err := s.Migrate(ctx)
	require.NoError(t, err)
	require.Empty(t, applied, "migrate up twice applies nothing the second time")
	secret, err := s.Secret(ctx, "page_token")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(secret), 32)
	// When the service was deployed: its first migration, the same on
	// every read (service-info's createdAt outlives restarts).
	deployed, err := s.DeployedAt(ctx)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), deployed, time.Hour)
	again, err := s.DeployedAt(ctx)
	require.NoError(t, err)
	require.Equal(t, deployed, again)
}

func TestCheckSchemaOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	for dialect, dsn := range modelstest.Dialects(t) {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, err := models.Open(ctx, dsn(t))
			require.NoError(t, err)
			defer s.Close()
			err = s.CheckSchema(ctx)
			require.ErrorIs(t, err, models.ErrSchemaOutdated)
			require.Contains(t, err.Error(), "wes migrate up")
			status, err := s.MigrationStatus(ctx)
			require.NoError(t, err)
			require.NotEmpty(t, status)
			require.False(t, status[0].Applied)
		})
	}
}

// Migration 4 copies each run's owner into the rows of its tags, for the
// runs stored before it; a build older than it, still inserting tags
// without an owner while this one rolls out, gets the run's all the same.
func TestMigrateRunTagsOwner(t *testing.T) {
	t.Parallel()
	for dialect, dsn := range modelstest.Dialects(t) {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := dsn(t)
			s, err := models.Open(ctx, url)
			require.NoError(t, err)
			defer s.Close()
			require.NoError(t, s.MigrateTo(ctx, 3))
			// As a build at version 3 stores a run: explicit seqs, far
			// above those the store gives CreateRun's runs below.
			insertOld := func(seq int64, owner string, tags map[string]string) {
				t.Helper()
				b, err := json.Marshal(tags)
				require.NoError(t, err)
				now := time.Now().UTC()
				require.NoError(t, s.Exec(ctx, `INSERT INTO runs (seq, id, owner, state, workflow_type, workflow_type_version,
					workflow_url, tags, created_at, updated_at) VALUES (?, ?, ?, 'QUEUED', 'CWL', 'v1.0', 'wf.cwl', ?, ?, ?)`,
					seq, fmt.Sprintf("old-%d", seq), owner, string(b), now, now))
				for k, v := range tags {
					require.NoError(t, s.Exec(ctx, "INSERT INTO run_tags (run_seq, key, value) VALUES (?, ?, ?)", seq, k, v))
				}
			}
			insertOld(1001, "alice", map[string]string{"t": "x"})
			insertOld(1002, "bob", map[string]string{"t": "x"})
			insertOld(1003, "", map[string]string{"t": "x"})
			insertOld(1004, "alice", map[string]string{"t": "x", "u": "y"})

			applied, err := s.Migrate(ctx)
			require.NoError(t, err)
			require.Contains(t, applied, int64(4))
			list := func(owner string, tags map[string]string) []string {
				return listIDs(t, s, models.ListQuery{Limit: 1, Owner: owner, Tags: tags})
			}
			tx := map[string]string{"t": "x"}
			require.Equal(t, []string{"old-1004", "old-1001"}, list("alice", tx), "backfilled")
			require.Equal(t, []string{"old-1002"}, list("bob", tx))
			require.Equal(t, []string{"old-1004"}, list("alice", map[string]string{"t": "x", "u": "y"}))
			require.Equal(t, []string{"old-1004", "old-1003", "old-1002", "old-1001"}, list("", tx))

			// An older build inserts after the migration; this one too.
			insertOld(1005, "bob", tx)
			run := newRun("new-1", tx)
			run.Owner = "carol"
			require.NoError(t, s.CreateRun(ctx, run))
			require.Equal(t, []string{"old-1005", "old-1002"}, list("bob", tx), "the older build's tags take the run's owner")
			require.Equal(t, []string{"new-1"}, list("carol", tx))

			// Down and up again: the backfill finds the rows written since.
			require.NoError(t, s.MigrateDownTo(ctx, 3))
			_, err = s.Migrate(ctx)
			require.NoError(t, err)
			require.Equal(t, []string{"old-1004", "old-1001"}, list("alice", tx))
			require.Equal(t, []string{"old-1005", "old-1002"}, list("bob", tx))
			require.Equal(t, []string{"new-1"}, list("carol", tx))
			if dialect == "postgres" {
				testMigrateRunTagsOwnerOnline(t, s, url, list)
			}
		})
	}
}

// On PostgreSQL migration 4 runs while older builds serve: it never makes
// their queries of run_tags wait long, and it finishes after a crash
// half-way.
func testMigrateRunTagsOwnerOnline(t *testing.T, s *models.Store, url string, list func(string, map[string]string) []string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	tx := map[string]string{"t": "x"}

	// A transaction that reads run_tags for 2 s, down and up: the
	// migration's tries to lock the table give way, a query waits for
	// one try (100 ms), not for the transaction.
	for _, migrate := range []func() error{
		func() error { return s.MigrateDownTo(ctx, 3) },
		func() error { _, err := s.Migrate(ctx); return err },
	} {
		reader, err := conn.Begin(ctx)
		require.NoError(t, err)
		_, err = reader.Exec(ctx, "LOCK TABLE run_tags IN ACCESS SHARE MODE")
		require.NoError(t, err)
		committed := make(chan error, 1)
		time.AfterFunc(2*time.Second, func() { committed <- reader.Commit(ctx) })
		done := make(chan error, 1)
		go func() { done <- migrate() }()
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		require.NoError(t, s.Exec(ctx, "SELECT count(*) FROM run_tags WHERE key = 't' AND value = 'x'"))
		require.Less(t, time.Since(start), time.Second, "a query of run_tags waited behind the migration")
		select {
		case err := <-done:
			t.Fatalf("migrated while run_tags was locked: %v", err)
		default:
		}
		require.NoError(t, <-committed)
		require.NoError(t, <-done)
	}
	require.Equal(t, []string{"old-1005", "old-1002"}, list("bob", tx))

	// As a crash half-way leaves it: version 4 not recorded, some rows
	// not backfilled, the CHECK not validated, and the index of an
	// interrupted CREATE INDEX CONCURRENTLY, invalid (here one that failed).
	for _, q := range []string{
		"DELETE FROM goose_db_version WHERE version_id = 4",
		"ALTER TABLE run_tags DROP CONSTRAINT run_tags_owner_not_null",
		"UPDATE run_tags SET owner = NULL WHERE run_seq IN (1001, 1002)",
		"ALTER TABLE run_tags ADD CONSTRAINT run_tags_owner_not_null CHECK (owner IS NOT NULL) NOT VALID",
		"DROP INDEX run_tags_key_value_owner",
	} {
		_, err := conn.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	_, err = conn.Exec(ctx, "CREATE UNIQUE INDEX CONCURRENTLY run_tags_key_value_owner ON run_tags (key)")
	require.Error(t, err, "duplicate keys")
	index := func() (valid, unique bool) {
		t.Helper()
		require.NoError(t, conn.QueryRow(ctx, `SELECT indisvalid, indisunique FROM pg_index
			WHERE indexrelid = 'run_tags_key_value_owner'::regclass`).Scan(&valid, &unique))
		return valid, unique
	}
	valid, _ := index()
	require.False(t, valid)
	applied, err := s.Migrate(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{4}, applied)
	valid, unique := index()
	require.True(t, valid, "the invalid index was built again")
	require.False(t, unique)
	var def string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_get_indexdef('run_tags_key_value_owner'::regclass)").Scan(&def))
	require.Contains(t, def, "(key, value, owner, run_seq DESC)")
	var validated bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT convalidated FROM pg_constraint
		WHERE conrelid = 'run_tags'::regclass AND conname = 'run_tags_owner_not_null'`).Scan(&validated))
	require.True(t, validated)
	require.Equal(t, []string{"old-1004", "old-1001"}, list("alice", tx), "backfilled")
	require.Equal(t, []string{"old-1005", "old-1002"}, list("bob", tx))
	_, err = conn.Exec(ctx, "UPDATE run_tags SET owner = NULL WHERE run_seq = 1001")
	require.Error(t, err, "owner is NOT NULL")
}

func testUpdateRuns(t *testing.T, s *models.Store) {
	ctx := context.Background()
	require.NoError(t, s.CreateRun(ctx, newRun("ur-1", nil)))
	require.NoError(t, s.CreateRun(ctx, newRun("ur-2", nil)))
	to := func(st models.State) func(*models.Run) ([]models.TaskLog, error) {
		return func(r *models.Run) ([]models.TaskLog, error) {
			if err := models.ValidateTransition(r.State, st); err != nil {
				return nil, fmt.Errorf("%w: %w", models.ErrSkip, err)
			}
			r.State = st
			return []models.TaskLog{{ID: string(st)}}, nil
		}
	}
	errs, err := s.UpdateRuns(ctx, []models.RunUpdate{
		{ID: "ur-1", Fn: to(models.Initializing)},
		{ID: "ur-1", Fn: to(models.Complete)}, // refused: left out, the others stand
		{ID: "missing", Fn: to(models.Running)},
		{ID: "ur-1", Fn: to(models.Running)},
		{ID: "ur-2", Fn: to(models.Canceled)},
	})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], models.ErrSkip)
	require.ErrorIs(t, errs[2], models.ErrNotFound)
	require.NoError(t, errs[3])
	require.NoError(t, errs[4])
	r1, err := s.GetRun(ctx, "ur-1")
	require.NoError(t, err)
	require.Equal(t, models.Running, r1.State)
	tasks, _, err := s.ListTasks(ctx, "ur-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, tasks, 2, "the refused update's task was rolled back with it")
	r2, err := s.GetRun(ctx, "ur-2")
	require.NoError(t, err)
	require.Equal(t, models.Canceled, r2.State)

	// Text the events carry is stored even where PostgreSQL's TEXT would
	// refuse it (NUL, invalid UTF-8); the same task twice in a batch keeps
	// the last report.
	errs, err = s.UpdateRuns(ctx, []models.RunUpdate{
		{ID: "ur-1", Fn: func(r *models.Run) ([]models.TaskLog, error) {
			r.ErrorMessage = "bad\x00byte \xff"
			return []models.TaskLog{{ID: "t", Name: "first"}}, nil
		}},
		{ID: "ur-1", Fn: func(r *models.Run) ([]models.TaskLog, error) {
			return []models.TaskLog{{ID: "t", Name: "sec\x00ond"}}, nil
		}},
	})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	r1, err = s.GetRun(ctx, "ur-1")
	require.NoError(t, err)
	require.Contains(t, r1.ErrorMessage, "bad")
	task, err := s.GetTask(ctx, "ur-1", "t")
	require.NoError(t, err)
	require.Contains(t, []string{"second", "sec\x00ond"}, task.Name)

	// A failure of the batch itself writes nothing.
	boom := errors.New("boom")
	_, err = s.UpdateRuns(ctx, []models.RunUpdate{
		{ID: "ur-1", Fn: to(models.Complete)},
		{ID: "ur-1", Fn: func(*models.Run) ([]models.TaskLog, error) { return nil, boom }},
	})
	require.ErrorIs(t, err, boom)
	r1, err = s.GetRun(ctx, "ur-1")
	require.NoError(t, err)
	require.Equal(t, models.Running, r1.State)
}

// ProjectRuns moves the checkpoint with the runs, refuses a stale
// checkpoint without writing anything, and rolls back when beforeCommit
// fails.
func testProjectRuns(t *testing.T, s *models.Store) {
	ctx := context.Background()
	require.NoError(t, s.CreateRun(ctx, newRun("pr-1", nil)))
	setState := func(st models.State) []models.RunUpdate {
		return []models.RunUpdate{{ID: "pr-1", Fn: func(r *models.Run) ([]models.TaskLog, error) {
			r.State = st
			return nil, nil
		}}}
	}
	state := func() models.State {
		r, err := s.GetRun(ctx, "pr-1")
		require.NoError(t, err)
		return r.State
	}
	pos := func() uint64 {
		p, err := s.Checkpoint(ctx, "pr")
		require.NoError(t, err)
		return p
	}
	require.Zero(t, pos(), "no checkpoint yet")

	errs, err := s.ProjectRuns(ctx, models.Checkpoint{Name: "pr", From: 0, To: 3}, setState(models.Initializing), nil)
	require.NoError(t, err)
	require.Equal(t, []error{nil}, errs)
	require.Equal(t, uint64(3), pos())
	require.Equal(t, models.Initializing, state())

	for _, from := range []uint64{0, 2, 4} {
		_, err = s.ProjectRuns(ctx, models.Checkpoint{Name: "pr", From: from, To: 9}, setState(models.Running), nil)
		require.ErrorIs(t, err, models.ErrCheckpointMoved, "from %d", from)
	}
	require.Equal(t, uint64(3), pos())
	require.Equal(t, models.Initializing, state(), "nothing written with a stale checkpoint")

	boom := errors.New("boom")
	var seen []error
	_, err = s.ProjectRuns(ctx, models.Checkpoint{Name: "pr", From: 3, To: 5}, append(setState(models.Running),
		models.RunUpdate{ID: "pr-missing", Fn: func(*models.Run) ([]models.TaskLog, error) { return nil, nil }}),
		func(errs []error) error { seen = errs; return boom })
	require.ErrorIs(t, err, boom)
	require.Len(t, seen, 2)
	require.NoError(t, seen[0])
	require.ErrorIs(t, seen[1], models.ErrNotFound)
	require.Equal(t, uint64(3), pos(), "beforeCommit's error rolls the checkpoint back")
	require.Equal(t, models.Initializing, state(), "and the runs")

	_, err = s.ProjectRuns(ctx, models.Checkpoint{Name: "pr", From: 3, To: 5}, nil, nil)
	require.NoError(t, err, "the checkpoint moves alone")
	require.Equal(t, uint64(5), pos())
}

func TestTransientErrorsAreUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40P01"}, true},  // deadlock
		{&pgconn.PgError{Code: "40001"}, true},  // serialization failure
		{&pgconn.PgError{Code: "57014"}, true},  // statement timeout
		{&pgconn.PgError{Code: "55P03"}, true},  // lock timeout
		{&pgconn.PgError{Code: "57P01"}, true},  // admin shutdown
		{&pgconn.PgError{Code: "53300"}, true},  // too many connections
		{&pgconn.PgError{Code: "22003"}, false}, // numeric value out of range
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation
		{errors.New("database is locked (5) (SQLITE_BUSY)"), true},
		{errors.New("syntax error"), false},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			err := fmt.Errorf("save runs: %w", tc.err)
			require.Equal(t, tc.want, errors.Is(models.Classify(err), models.ErrUnavailable))
		})
	}
}

// One event's task updates may be thousands (a scatter's final event):
// they are written whatever the dialect's limit on bound values in one
// statement (11 a task: SQLite takes 32,766, PostgreSQL 65,535).
func testManyTasks(t *testing.T, s *models.Store) {
	ctx := context.Background()
	const n = 7000
	require.NoError(t, s.CreateRun(ctx, newRun("scatter", nil)))
	require.NoError(t, s.UpdateRun(ctx, "scatter", func(r *models.Run) ([]models.TaskLog, error) {
		ts := make([]models.TaskLog, n)
		for i := range ts {
			ts[i] = models.TaskLog{ID: fmt.Sprintf("t%d", i), Name: "step"}
		}
		r.State = models.Initializing
		return ts, nil
	}))
	tasks, _, err := s.ListTasks(ctx, "scatter", 0, n+1)
	require.NoError(t, err)
	require.Len(t, tasks, n)
}

// Runs whose seqs came back from a multi-row INSERT in another order than
// the rows went in (neither database promises it) get their own back: a
// run with another's seq would carry that run's tags.
func testCheckSeqs(t *testing.T, s *models.Store) {
	ctx := context.Background()
	runs := []*models.Run{newRun("seq-a", nil), newRun("seq-b", nil), newRun("seq-c", nil)}
	require.NoError(t, s.CreateRuns(ctx, runs, nil))
	want := map[string]int64{}
	for _, r := range runs {
		want[r.ID] = r.Seq
	}
	runs[0].Seq, runs[2].Seq = runs[2].Seq, runs[0].Seq // as a reordered RETURNING would map them
	require.NoError(t, s.CheckSeqs(runs))
	for _, r := range runs {
		require.Equal(t, want[r.ID], r.Seq, r.ID)
	}
}
