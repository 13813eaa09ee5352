package models

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
)

const (
	dialectPostgres = "postgres"
	dialectSQLite   = "sqlite"
)

// Store is the run store on PostgreSQL or SQLite.
type Store struct {
	db      *gorm.DB
	sqlDB   *sql.DB
	dialect string
}

// Open connects to the database that url names: a postgres:// or
// postgresql:// URL, or a SQLite file (sqlite:///path, file:path or a plain
// path). It does not migrate; see Migrate and CheckSchema.
func Open(ctx context.Context, url string) (*Store, error) {
	var (
		dialector gorm.Dialector
		dialect   string
	)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		dialect, dialector = dialectPostgres, postgres.Open(url)
	case url == "":
		return nil, fmt.Errorf("%w: empty database URL", ErrInvalid)
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite://"), "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("create database directory: %w", err)
			}
		}
		dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
			"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
		dialect, dialector = dialectSQLite, sqlite.Open(dsn)
	}
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, classify(err))
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	if dialect == dialectSQLite {
		// SQLite has one writer; one connection makes every transaction
		// wait its turn instead of failing with SQLITE_BUSY.
		sqlDB.SetMaxOpenConns(1)
	} else {
		sqlDB.SetMaxOpenConns(20)
		sqlDB.SetMaxIdleConns(10)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	}
	s := &Store{db: db, sqlDB: sqlDB, dialect: dialect}
	if err := s.Ping(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	return s, nil
}

// Dialect is "postgres" or "sqlite".
func (s *Store) Dialect() string { return s.dialect }

// Close closes the connection pool.
func (s *Store) Close() error { return s.sqlDB.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", classify(err))
	}
	return nil
}

// classify marks errors that mean "the database cannot be reached" with
// ErrUnavailable so that callers can answer 503 instead of 500.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var (
		netErr     net.Error
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
	)
	if errors.As(err, &netErr) || errors.As(err, &connectErr) || errors.Is(err, driver.ErrBadConn) ||
		pgconn.SafeToRetry(err) || (errors.As(err, &pgErr) && transientSQLState(pgErr.Code)) ||
		strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "database is locked") {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// transientSQLState reports whether a PostgreSQL error code means "try
// again later" rather than "this statement is wrong": serialization
// failures and deadlocks (class 40), lack of resources (53), a lock or
// statement timeout (55P03, 57014) and a server shutting down (57P0x).
func transientSQLState(code string) bool {
	switch {
	case strings.HasPrefix(code, "40"), strings.HasPrefix(code, "53"), strings.HasPrefix(code, "57P"):
		return true
	}
	return code == "55P03" || code == "57014"
}

// CreateRun inserts a new run, its tag index and the outbox messages that
// announce it, in one transaction.
func (s *Store) CreateRun(ctx context.Context, run *Run, outbox ...*OutboxMessage) error {
	return s.CreateRuns(ctx, []*Run{run}, outbox)
}

// CreateRuns inserts runs, their tag indexes and outbox messages in one
// transaction with one multi-row INSERT per table: the API groups
// concurrent submissions this way, so that one commit serves many. Either
// every run is stored or none is. Seq of every run and outbox message is
// set on return.
func (s *Store) CreateRuns(ctx context.Context, runs []*Run, outbox []*OutboxMessage) error {
	if len(runs) == 0 && len(outbox) == 0 {
		return nil
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if len(runs) > 0 {
			if err := tx.Create(runs).Error; err != nil {
				return fmt.Errorf("insert runs: %w", err)
			}
			if err := checkSeqs(tx, runs); err != nil {
				return err
			}
		}
		var tags []RunTag
		for _, run := range runs {
			for k, v := range run.Request.Tags {
				tags = append(tags, RunTag{RunSeq: run.Seq, Key: k, Value: v, Owner: run.Owner})
			}
		}
		if len(tags) > 0 {
			if err := tx.Create(&tags).Error; err != nil {
				return fmt.Errorf("insert tags: %w", err)
			}
		}
		return insertOutbox(tx, outbox)
	})
	return classify(err)
}

// checkSeqs makes sure each run has its own seq. GORM gives the rows a
// multi-row INSERT returns to the runs in the order they come, and neither
// database promises that order (SQLite says it is arbitrary); a run given
// another's seq would have the other's tags, perhaps another owner's. The
// seqs are assigned in the order the rows are inserted, so they rise in
// that order; if they do not, each run's is read back by its id.
func checkSeqs(tx *gorm.DB, runs []*Run) error {
	rising := true
	for i := 1; i < len(runs) && rising; i++ {
		rising = runs[i-1].Seq < runs[i].Seq
	}
	if rising {
		return nil
	}
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
	}
	var rows []struct {
		ID  string
		Seq int64
	}
	if err := tx.Model(&Run{}).Select("id, seq").Where("id IN ?", ids).Scan(&rows).Error; err != nil {
		return fmt.Errorf("read back the runs' seqs: %w", err)
	}
	seqs := make(map[string]int64, len(rows))
	for _, r := range rows {
		seqs[r.ID] = r.Seq
	}
	for _, r := range runs {
		r.Seq = seqs[r.ID]
	}
	return nil
}

func insertOutbox(tx *gorm.DB, msgs []*OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now().UTC()
	for _, m := range msgs {
		if m.CreatedAt.IsZero() {
			m.CreatedAt = now
		}
	}
	if err := tx.Create(msgs).Error; err != nil {
		return fmt.Errorf("insert outbox messages: %w", err)
	}
	return nil
}

// GetRun returns the run with that id, or an error wrapping ErrNotFound.
func (s *Store) GetRun(ctx context.Context, id string) (*Run, error) {
	var r Run
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("run %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get run: %w", classify(err))
	}
	return &r, nil
}

// ListQuery selects a page of runs, newest first.
type ListQuery struct {
	// Limit is the page size (> 0).
	Limit int
	// Before, when non-zero, continues after the run with that Seq.
	Before int64
	// State, when set, keeps runs in that state only.
	State State
	// Tags keeps runs that carry every key:value pair given.
	Tags map[string]string
	// Owner, when set, keeps that owner's runs only.
	Owner string
}

// ListRuns returns one page of run summaries (Seq, ID, State, tags, start
// and end time; the other fields are zero) and the cursor of the next page
// (0 when this is the last one). It walks an index on seq: no OFFSET.
func (s *Store) ListRuns(ctx context.Context, q ListQuery) ([]Run, int64, error) {
	if q.Limit <= 0 {
		return nil, 0, fmt.Errorf("%w: page size must be positive", ErrInvalid)
	}
	// A page lists summaries: reading only their columns keeps a page of
	// 1000 runs with large params and outputs cheap.
	db := s.db.WithContext(ctx).Model(&Run{}).
		Select("runs.seq", "runs.id", "runs.state", "runs.tags", "runs.start_time", "runs.end_time")
	if q.Before > 0 {
		db = db.Where("runs.seq < ?", q.Before)
	}
	if q.State != "" {
		db = db.Where("runs.state = ?", q.State)
	}
	if q.Owner != "" {
		// Also when a tag's row matches the owner below: runs.owner is
		// the run's, run_tags.owner only a copy for the index.
		db = db.Where("runs.owner = ?", q.Owner)
	}
	order := "runs.seq DESC"
	// In key order, so that the same filter always takes the same plan.
	for i, k := range slices.Sorted(maps.Keys(q.Tags)) {
		v := q.Tags[k]
		if i == 0 && q.Owner != "" {
			// An owner's list walks run_tags_key_value_owner: that owner's
			// runs with the tag, newest first, where runs_owner_seq or
			// run_tags_key_value would each walk many runs to find few.
			// A join ordered by the tag's row, because SQLite checks an
			// EXISTS on each run of a walk of runs, and sorts a join
			// ordered by runs.seq. (run_seq, key) is run_tags' primary
			// key: the join repeats no run.
			db = db.Joins("JOIN run_tags t0 ON t0.run_seq = runs.seq").
				Where("t0.key = ? AND t0.value = ? AND t0.owner = ?", k, v, q.Owner)
			if q.Before > 0 {
				db = db.Where("t0.run_seq < ?", q.Before)
			}
			order = "t0.run_seq DESC"
			continue
		}
		// PostgreSQL makes this EXISTS a join (the key makes run_seq
		// unique) and may walk the tag's rows newest first; it carries
		// the join's equality to them, not the cursor, and would start
		// that walk at the top on every page without the cursor here.
		cond, args := "t.run_seq = runs.seq AND t.key = ? AND t.value = ?", []any{k, v}
		if q.Before > 0 {
			cond, args = cond+" AND t.run_seq < ?", append(args, q.Before)
		}
		db = db.Where("EXISTS (SELECT 1 FROM run_tags t WHERE "+cond+")", args...)
	}
	var runs []Run
	if err := db.Order(order).Limit(q.Limit + 1).Find(&runs).Error; err != nil {
		return nil, 0, fmt.Errorf("list runs: %w", classify(err))
	}
	var next int64
	if len(runs) > q.Limit {
		runs = runs[:q.Limit]
		next = runs[len(runs)-1].Seq
	}
	return runs, next, nil
}

// StateCounts returns the number of runs in each of the eleven states (an
// owner's only, when owner is set); states without runs count zero.
func (s *Store) StateCounts(ctx context.Context, owner string) (map[State]int64, error) {
	var rows []struct {
		State State
		N     int64
	}
	db := s.db.WithContext(ctx).Model(&Run{}).Select("state, count(*) AS n").Group("state")
	if owner != "" {
		db = db.Where("owner = ?", owner)
	}
	if err := db.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("count runs by state: %w", classify(err))
	}
	counts := make(map[State]int64, len(States))
	for _, st := range States {
		counts[st] = 0
	}
	for _, r := range rows {
		counts[r.State] = r.N
	}
	return counts, nil
}

// UpdateRun loads the progress of the run with that id under a row lock,
// lets fn change it, and writes it back with the task logs fn returns, in
// one transaction. fn sees and may change only the run's id, engine and
// progressColumns (state, times, results, executor): the run's request,
// owner and cancel flag are neither loaded nor written. If fn returns an
// error (ErrSkip to mean "nothing to do") nothing is written and the error
// is returned.
func (s *Store) UpdateRun(ctx context.Context, id string, fn func(*Run) ([]TaskLog, error)) error {
	errs, err := s.UpdateRuns(ctx, []RunUpdate{{ID: id, Fn: fn}})
	if err != nil {
		return err
	}
	return errs[0]
}

// RunUpdate is one change of UpdateRuns: fn changes the run with that id,
// as in UpdateRun.
type RunUpdate struct {
	ID string
	Fn func(*Run) ([]TaskLog, error)
}

// UpdateRuns applies updates in order, in one transaction, with a constant
// number of statements: it reads (and on PostgreSQL locks) every run the
// batch names at once, applies each fn in memory to a copy of its run,
// then writes the changed runs in one statement and the task logs in
// another. Each fn sees and may change only a run's progressColumns (its
// state, times, results and executor) besides its id and engine; its other
// fields are zero and what it writes to them is not stored.
// An update whose fn fails with ErrSkip or a refused transition, or whose
// run does not exist, is left out (its copy is dropped) while the others
// stand. It returns the error of each update, or an error for the whole
// batch (then nothing was written): a fn's other errors, or the database's.
func (s *Store) UpdateRuns(ctx context.Context, updates []RunUpdate) ([]error, error) {
	return s.updateRuns(ctx, nil, updates, nil)
}

// Checkpoint is how far a consumer has applied a stream. ProjectRuns moves
// it from From (the position read with Store.Checkpoint or returned by the
// last ProjectRuns) to To in the transaction that applies the events
// between: the events are applied exactly once, in order, even when two
// consumers briefly believe they are the only one.
type Checkpoint struct {
	Name     string
	From, To uint64
}

// ErrCheckpointMoved: the checkpoint is no longer where the caller read it;
// another consumer applied events meanwhile, and nothing was written.
var ErrCheckpointMoved = errors.New("the checkpoint moved: another consumer applied these events")

// Checkpoint returns the stored position of the named consumer, 0 if it
// has none yet.
func (s *Store) Checkpoint(ctx context.Context, name string) (uint64, error) {
	var pos []int64
	if err := s.db.WithContext(ctx).Table("checkpoints").Where("name = ?", name).Pluck("position", &pos).Error; err != nil {
		return 0, fmt.Errorf("read checkpoint %s: %w", name, classify(err))
	}
	if len(pos) == 0 {
		return 0, nil
	}
	return uint64(pos[0]), nil
}

// ProjectRuns is UpdateRuns that also moves cp from cp.From to cp.To, in
// the same transaction, or fails with ErrCheckpointMoved. beforeCommit, if
// not nil, sees the result of every update once they are written and
// before the commit; an error from it rolls everything back and is
// returned.
func (s *Store) ProjectRuns(ctx context.Context, cp Checkpoint, updates []RunUpdate, beforeCommit func([]error) error) ([]error, error) {
	return s.updateRuns(ctx, &cp, updates, beforeCommit)
}

// ForgetEventPositions makes every run forget the stream position of the
// last event applied to it, provided checkpoint name is still at pos (else
// ErrCheckpointMoved), in one transaction: for a stream that was
// recreated, whose new events carry sequence numbers a run has seen
// already and would skip as applied. The transition table still keeps
// every run from going back.
func (s *Store) ForgetEventPositions(ctx context.Context, name string, pos uint64) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Exec("UPDATE checkpoints SET updated_at = ? WHERE name = ? AND position = ?", time.Now().UTC(), name, int64(pos))
		if res.Error != nil {
			return fmt.Errorf("lock checkpoint %s: %w", name, classify(res.Error))
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("checkpoint %s at %d: %w", name, pos, ErrCheckpointMoved)
		}
		if err := tx.Exec("UPDATE runs SET last_event_seq = 0 WHERE last_event_seq > 0").Error; err != nil {
			return fmt.Errorf("forget event positions: %w", classify(err))
		}
		return nil
	})
}

// moveCheckpoint moves cp in tx. Its row lock makes a concurrent consumer
// wait for this transaction, then find the checkpoint moved.
func moveCheckpoint(tx *gorm.DB, cp *Checkpoint) error {
	now := time.Now().UTC()
	var res *gorm.DB
	if cp.From == 0 {
		res = tx.Exec("INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
			cp.Name, int64(cp.To), now)
	} else {
		res = tx.Exec("UPDATE checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position = ?",
			int64(cp.To), now, cp.Name, int64(cp.From))
	}
	if res.Error != nil {
		return fmt.Errorf("move checkpoint %s: %w", cp.Name, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("checkpoint %s at %d: %w", cp.Name, cp.From, ErrCheckpointMoved)
	}
	return nil
}

func (s *Store) updateRuns(ctx context.Context, cp *Checkpoint, updates []RunUpdate, beforeCommit func([]error) error) ([]error, error) {
	errs := make([]error, len(updates))
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if cp != nil {
			if err := moveCheckpoint(tx, cp); err != nil {
				return err
			}
		}
		if err := s.applyUpdates(tx, updates, errs); err != nil {
			return err
		}
		if beforeCommit != nil {
			return beforeCommit(errs)
		}
		return nil
	})
	if err != nil {
		return nil, classify(err)
	}
	return errs, nil
}

// applyUpdates is the body of UpdateRuns: it writes the updates that
// succeed and puts the error of each other one in errs.
func (s *Store) applyUpdates(tx *gorm.DB, updates []RunUpdate, errs []error) error {
	if len(updates) == 0 {
		return nil
	}
	ids := make([]string, 0, len(updates))
	seen := make(map[string]bool, len(updates))
	for _, u := range updates {
		if !seen[u.ID] {
			seen[u.ID] = true
			ids = append(ids, u.ID)
		}
	}
	var rows []*Run
	q := tx
	if s.dialect == dialectPostgres {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	names := []string{"id", "engine"}
	for _, c := range progressColumns() {
		names = append(names, c.name)
	}
	// In seq order, so that concurrent writers lock rows in one order.
	if err := q.Select(names).Where("id IN ?", ids).Order("seq").Find(&rows).Error; err != nil {
		return fmt.Errorf("load runs: %w", err)
	}
	byID := make(map[string]*Run, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	var (
		changed []*Run
		dirty   = map[string]bool{}
		tasks   []TaskLog
	)
	now := time.Now().UTC()
	for i, u := range updates {
		r := byID[u.ID]
		if r == nil {
			errs[i] = fmt.Errorf("run %q: %w", u.ID, ErrNotFound)
			continue
		}
		next := *r
		ts, err := u.Fn(&next)
		if err != nil {
			if !errors.Is(err, ErrSkip) && !isRefusal(err) {
				return err
			}
			errs[i] = err
			continue
		}
		next.UpdatedAt = now
		*r = next
		if !dirty[r.ID] {
			dirty[r.ID] = true
			changed = append(changed, r)
		}
		for _, t := range ts {
			t.Seq, t.RunID = 0, r.ID
			tasks = append(tasks, t)
		}
	}
	if err := s.saveProgress(tx, changed); err != nil {
		return err
	}
	return s.upsertTasks(tx, tasks)
}

// progressColumn is a column of a run that UpdateRuns writes: its name,
// its PostgreSQL type (for the casts of saveProgress's VALUES list) and
// its value in a run, JSON columns encoded as gorm's serializer stores them.
type progressColumn struct {
	name, pgType string
	value        func(*Run) (any, error)
}

// progressColumns are the columns of a run that UpdateRuns writes, after
// seq: what a run's events change. It reads them with id and engine; the
// request, its attachments, owner and cancel flag are neither read nor
// written, which keeps their JSON out of every projected event's round
// trip.
func progressColumns() []progressColumn {
	field := func(f func(*Run) any) func(*Run) (any, error) {
		return func(r *Run) (any, error) { return f(r), nil }
	}
	return []progressColumn{
		{"seq", "bigint", field(func(r *Run) any { return r.Seq })},
		{"state", "text", field(func(r *Run) any { return string(r.State) })},
		{"attempt", "integer", field(func(r *Run) any { return r.Attempt })},
		{"updated_at", "timestamptz", field(func(r *Run) any { return r.UpdatedAt })},
		{"start_time", "timestamptz", field(func(r *Run) any { return r.StartTime })},
		{"end_time", "timestamptz", field(func(r *Run) any { return r.EndTime })},
		{"exit_code", "integer", field(func(r *Run) any { return r.ExitCode })},
		{"cmd", "text", func(r *Run) (any, error) { return jsonColumn(r.Cmd) }},
		{"system_logs", "text", func(r *Run) (any, error) { return jsonColumn(r.SystemLogs) }},
		{"outputs", "text", func(r *Run) (any, error) {
			if len(r.Outputs) == 0 {
				return nil, nil
			}
			return jsonColumn(r.Outputs)
		}},
		{"error_message", "text", field(func(r *Run) any { return r.ErrorMessage })},
		{"executor", "text", field(func(r *Run) any { return r.Executor })},
		{"last_event_seq", "bigint", field(func(r *Run) any { return int64(r.LastEventSeq) })},
	}
}

// jsonColumn is v as gorm's JSON serializer stores it: NULL for null.
func jsonColumn(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil || string(b) == "null" {
		return nil, err
	}
	return string(b), nil
}

// saveProgress writes the progressColumns of runs (loaded and locked by
// applyUpdates) in one UPDATE ... FROM a VALUES list.
func (s *Store) saveProgress(tx *gorm.DB, runs []*Run) error {
	if len(runs) == 0 {
		return nil
	}
	cols := progressColumns()
	names := make([]string, len(cols))
	sets := make([]string, 0, len(cols))
	params := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
		params[i] = "?"
		if s.dialect == dialectPostgres {
			params[i] = "CAST(? AS " + c.pgType + ")"
		}
		if c.name != "seq" {
			sets = append(sets, c.name+" = v."+c.name)
		}
	}
	row := "(" + strings.Join(params, ", ") + ")"
	var (
		q    strings.Builder
		args = make([]any, 0, len(runs)*len(cols))
	)
	q.WriteString("WITH v (" + strings.Join(names, ", ") + ") AS (VALUES ")
	for i, r := range runs {
		s.sanitize(r)
		for _, c := range cols {
			v, err := c.value(r)
			if err != nil {
				return fmt.Errorf("save run %q: %s: %w", r.ID, c.name, err)
			}
			args = append(args, v)
		}
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(row)
	}
	q.WriteString(") UPDATE runs SET " + strings.Join(sets, ", ") + " FROM v WHERE runs.seq = v.seq")
	res := tx.Exec(q.String(), args...)
	if res.Error != nil {
		return fmt.Errorf("save runs: %w", res.Error)
	}
	if res.RowsAffected != int64(len(runs)) {
		return fmt.Errorf("save runs: %d of %d runs written", res.RowsAffected, len(runs))
	}
	return nil
}

// upsertTasks writes task logs, the last one of each (run, task) winning,
// in one statement.
func (s *Store) upsertTasks(tx *gorm.DB, tasks []TaskLog) error {
	if len(tasks) == 0 {
		return nil
	}
	type key struct{ run, task string }
	last := make(map[key]int, len(tasks))
	for i, t := range tasks {
		last[key{t.RunID, t.ID}] = i
	}
	out := make([]TaskLog, 0, len(last))
	for i, t := range tasks {
		if last[key{t.RunID, t.ID}] == i {
			s.sanitizeTask(&t)
			out = append(out, t)
		}
	}
	// A statement binds 11 values a task; SQLite takes at most 32,766 and
	// PostgreSQL 65,535 in one statement, and a run's final event may
	// carry thousands of tasks (a scatter).
	onConflict := clause.OnConflict{
		Columns: []clause.Column{{Name: "run_id"}, {Name: "task_id"}},
		DoUpdates: clause.AssignmentColumns([]string{
			"name", "cmd", "start_time", "end_time", "stdout", "stderr", "exit_code", "system_logs", "tes_uri",
		}),
	}
	for chunk := range slices.Chunk(out, tasksPerStatement) {
		if err := tx.Clauses(onConflict).Create(&chunk).Error; err != nil {
			return fmt.Errorf("upsert tasks: %w", err)
		}
	}
	return nil
}

// tasksPerStatement bounds the task rows one INSERT writes.
const tasksPerStatement = 1000

// sanitize makes r's plain text columns storable: PostgreSQL's TEXT takes
// neither NUL nor invalid UTF-8, which an event may carry (the JSON columns
// escape them).
func (s *Store) sanitize(r *Run) {
	if s.dialect != dialectPostgres {
		return
	}
	r.ErrorMessage = storableText(r.ErrorMessage)
	r.Executor = storableText(r.Executor)
}

func (s *Store) sanitizeTask(t *TaskLog) {
	if s.dialect != dialectPostgres {
		return
	}
	for _, f := range []*string{&t.ID, &t.Name, &t.Stdout, &t.Stderr, &t.TESURI} {
		*f = storableText(*f)
	}
}

func storableText(v string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(v, "\uFFFD"), "\x00", "")
}

// isRefusal reports whether err is a refused transition or a stale event:
// the update's own business, not the batch's.
func isRefusal(err error) bool {
	var te *TransitionError
	return errors.As(err, &te) || errors.Is(err, ErrStaleAttempt)
}

// HeldRuns returns up to limit runs after seq after (0: from the first)
// that an executor should be holding: INITIALIZING, RUNNING, PAUSED or
// CANCELING, oldest first.
func (s *Store) HeldRuns(ctx context.Context, after int64, limit int) ([]Run, error) {
	var runs []Run
	err := s.db.WithContext(ctx).
		Where("state IN ? AND seq > ?", []State{Initializing, Running, Paused, Canceling}, after).
		Order("seq").Limit(limit).Find(&runs).Error
	if err != nil {
		return nil, fmt.Errorf("held runs: %w", classify(err))
	}
	return runs, nil
}

// StaleRuns returns up to limit runs after seq after, in seq order, that
// wait for an executor (QUEUED or PREEMPTED), created and last changed
// before before, and whose run.submitted message has left the outbox: runs
// whose message the queue must hold.
func (s *Store) StaleRuns(ctx context.Context, before time.Time, after int64, limit int) ([]Run, error) {
	var runs []Run
	before = before.UTC() // SQLite compares the text of times
	err := s.db.WithContext(ctx).
		Where("state IN ? AND seq > ? AND created_at < ? AND updated_at < ?", []State{Queued, Preempted}, after, before, before).
		Where("NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.msg_id = runs.id)").
		Order("seq").Limit(limit).Find(&runs).Error
	if err != nil {
		return nil, fmt.Errorf("stale runs: %w", classify(err))
	}
	return runs, nil
}

// RequestCancel marks a run as cancel-requested and queues the outbox
// message that msg builds from the run, in one transaction. For a run that
// is already final or already being canceled it changes nothing and returns
// changed=false: cancel is idempotent.
func (s *Store) RequestCancel(ctx context.Context, id string, msg func(*Run) (*OutboxMessage, error)) (run *Run, changed bool, err error) {
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r Run
		q := tx
		if s.dialect == dialectPostgres {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		if err := q.Where("id = ?", id).Take(&r).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("run %q: %w", id, ErrNotFound)
			}
			return err
		}
		run = &r
		if r.State.Terminal() || r.CancelRequested {
			return nil
		}
		m, err := msg(&r)
		if err != nil {
			return err
		}
		if err := tx.Model(&r).Update("cancel_requested", true).Error; err != nil {
			return fmt.Errorf("flag cancel: %w", err)
		}
		r.CancelRequested, changed = true, true
		return insertOutbox(tx, []*OutboxMessage{m})
	})
	return run, changed, classify(err)
}

// ListTasks returns up to limit task logs of a run after the cursor, in the
// order the engine reported them, and the next cursor (0 at the end).
func (s *Store) ListTasks(ctx context.Context, runID string, after int64, limit int) ([]TaskLog, int64, error) {
	if limit <= 0 {
		return nil, 0, fmt.Errorf("%w: page size must be positive", ErrInvalid)
	}
	var tasks []TaskLog
	err := s.db.WithContext(ctx).Where("run_id = ? AND seq > ?", runID, after).
		Order("seq").Limit(limit + 1).Find(&tasks).Error
	if err != nil {
		return nil, 0, fmt.Errorf("list tasks: %w", classify(err))
	}
	var next int64
	if len(tasks) > limit {
		tasks = tasks[:limit]
		next = tasks[len(tasks)-1].Seq
	}
	return tasks, next, nil
}

// GetTask returns one task log of a run, or an error wrapping ErrNotFound.
func (s *Store) GetTask(ctx context.Context, runID, taskID string) (*TaskLog, error) {
	var t TaskLog
	err := s.db.WithContext(ctx).Where("run_id = ? AND task_id = ?", runID, taskID).Take(&t).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("task %q of run %q: %w", taskID, runID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get task: %w", classify(err))
	}
	return &t, nil
}

// PendingOutbox returns up to limit unpublished outbox messages created
// before the given time, oldest first.
func (s *Store) PendingOutbox(ctx context.Context, limit int, before time.Time) ([]OutboxMessage, error) {
	var msgs []OutboxMessage
	if err := s.db.WithContext(ctx).Where("created_at < ?", before.UTC()).Order("seq").Limit(limit).Find(&msgs).Error; err != nil {
		return nil, fmt.Errorf("read outbox: %w", classify(err))
	}
	return msgs, nil
}

// DropDelivered deletes the outbox rows of submissions whose run has moved
// on (a state other than QUEUED, or an attempt): their message was
// published and delivered, and its row was left behind (the process died,
// or its delete failed, after JetStream acknowledged it). Publishing such a
// row again after the stream's duplicate window would be a new message, a
// first delivery of a run that has run already. Only rows created before
// before are looked at (the relay deletes fresh ones itself). It returns
// how many rows it deleted.
func (s *Store) DropDelivered(ctx context.Context, before time.Time) (int64, error) {
	res := s.db.WithContext(ctx).
		Where("created_at < ?", before.UTC()).
		Where("EXISTS (SELECT 1 FROM runs WHERE runs.id = outbox.msg_id AND (runs.state <> ? OR runs.attempt > 0))", Queued).
		Delete(&OutboxMessage{})
	if res.Error != nil {
		return 0, fmt.Errorf("drop delivered outbox messages: %w", classify(res.Error))
	}
	return res.RowsAffected, nil
}

// DeleteOutbox removes published outbox messages.
func (s *Store) DeleteOutbox(ctx context.Context, seqs ...int64) error {
	if len(seqs) == 0 {
		return nil
	}
	if err := s.db.WithContext(ctx).Where("seq IN ?", seqs).Delete(&OutboxMessage{}).Error; err != nil {
		return fmt.Errorf("delete outbox messages: %w", classify(err))
	}
	return nil
}

// OutboxBacklog counts unpublished outbox messages.
func (s *Store) OutboxBacklog(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&OutboxMessage{}).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count outbox: %w", classify(err))
	}
	return n, nil
}

// Secret returns a server-wide secret created by the migrations.
func (s *Store) Secret(ctx context.Context, name string) (string, error) {
	var v string
	err := s.db.WithContext(ctx).Table("server_secrets").Select("value").Where("name = ?", name).Take(&v).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("read secret: %w", classify(err))
	}
	return v, nil
}
