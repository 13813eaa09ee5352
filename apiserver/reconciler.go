package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// registry answers whether an executor's announcement is still in the
// executors bucket (whose TTL the server enforces, on its clock).
type registry interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Status(ctx context.Context) (jetstream.KeyValueStatus, error)
}

// HeldRunsStore is what the reconciler needs of the run store.
type HeldRunsStore interface {
	HeldRuns(ctx context.Context, after int64, limit int) ([]models.Run, error)
	StaleRuns(ctx context.Context, before time.Time, after int64, limit int) ([]models.Run, error)
	GetRun(ctx context.Context, id string) (*models.Run, error)
	Checkpoint(ctx context.Context, name string) (uint64, error)
}

// eventPublisher publishes run events and queues runs.
type eventPublisher interface {
	PublishEvent(ctx context.Context, ev events.RunEvent) error
	EncodeEvent(ev events.RunEvent) (subject, msgID string, data []byte, err error)
	PublishDedup(ctx context.Context, subject, msgID string, data []byte) (duplicate bool, err error)
	Publish(ctx context.Context, subject, msgID string, data []byte) error
	EncodeSubmitted(m events.RunSubmitted) (subject, msgID string, data []byte, err error)
}

// streams looks up a stream (the runs' work queue).
type streams interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// ReconcilerConfig is how a reconciler works.
type ReconcilerConfig struct {
	// Holder names this replica in the lease.
	Holder string
	// Interval is how often it looks at the held runs.
	Interval time.Duration
	// RequeueAfter is how long a run waiting for an executor may go
	// unchanged before the reconciler checks that the queue still holds
	// its message.
	RequeueAfter time.Duration
}

// Reconciler finds runs whose facts disagree and repairs them by emitting
// the event that tells the truth: a run INITIALIZING or RUNNING on an
// executor that stopped announcing itself becomes PREEMPTED (JetStream gives
// it to another executor once its heartbeat lapses), and a run CANCELING on
// such an executor becomes CANCELED (its cancel flag keeps any redelivery
// from running it). One reconciler is active at a time across API replicas,
// by a lease in the leases bucket.
//
// An executor is taken for gone only when the catalog has not heard from it
// for a TTL and the registry no longer holds its entry, and only after this
// process has been connected to NATS, without a reconnect, and the
// registry's stream has answered, for a TTL: a
// catalog that missed announcements (the process was paused, the watch
// stalled, NATS was unreachable) must not preempt runs that are running.
type Reconciler struct {
	store    HeldRunsStore
	catalog  *Catalog
	registry registry
	conn     *nats.Conn
	pub      eventPublisher
	lease    *events.Lease
	interval time.Duration
	// page is how many held runs are read at a time.
	page    int
	log     *slog.Logger
	repairs *prometheus.CounterVec

	js    streams
	names events.Names
	// requeueAfter: see ReconcilerConfig. The waiting runs are looked at
	// a page at a time, every requeueAfter/2, from staleAfter on.
	requeueAfter time.Duration
	lastRequeue  time.Time
	staleAfter   int64

	// reconnects is the connection's reconnect count when last looked at;
	// connectedSince is when it was last seen to change (or to connect).
	reconnects     uint64
	connectedSince time.Time
	// registryUpSince is since when the registry's stream has answered
	// every look; zero after it did not.
	registryUpSince time.Time
}

// NewReconciler returns a reconciler.
func NewReconciler(store HeldRunsStore, catalog *Catalog, bus *events.Bus, cfg ReconcilerConfig, reg prometheus.Registerer, log *slog.Logger) *Reconciler {
	repairs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wes_reconciler_repairs_total", Help: "Runs repaired by the reconciler, by kind.",
	}, []string{"kind"})
	reg.MustRegister(repairs)
	if cfg.RequeueAfter <= 0 {
		cfg.RequeueAfter = 2 * time.Minute
	}
	return &Reconciler{
		store: store, catalog: catalog, registry: bus.Executors, conn: bus.JS.Conn(),
		pub: events.NewPublisher(bus.JS, bus.Names), lease: events.NewLease(bus, "reconciler", cfg.Holder),
		interval: cfg.Interval, page: 1000, log: log.With("component", "reconciler"), repairs: repairs,
		js: bus.JS, names: bus.Names, requeueAfter: cfg.RequeueAfter,
	}
}

// connectedForTTL reports whether the NATS connection has been up, without
// a reconnect, for the catalog's TTL: long enough for every live executor
// to have announced itself since.
func (rc *Reconciler) connectedForTTL() bool {
	if rc.conn == nil {
		return true
	}
	now := time.Now()
	if !rc.conn.IsConnected() {
		rc.connectedSince = time.Time{}
		return false
	}
	if n := rc.conn.Stats().Reconnects; n != rc.reconnects || rc.connectedSince.IsZero() {
		rc.reconnects, rc.connectedSince = n, now
	}
	return now.Sub(rc.connectedSince) >= rc.catalog.ttl
}

// registryUpForTTL reports whether the registry's stream has answered for
// the catalog's TTL. While it does not (a NATS node restarting, its
// leader being elected) executors cannot announce themselves, and the
// absence of their entries says nothing: only a TTL after it answers again
// has every live executor had the time to announce itself.
func (rc *Reconciler) registryUpForTTL(ctx context.Context) bool {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := rc.registry.Status(sctx); err != nil {
		if !rc.registryUpSince.IsZero() {
			rc.log.Warn("the executor registry does not answer; no run is repaired until it has answered for a TTL", "err", err)
		}
		rc.registryUpSince = time.Time{}
		return false
	}
	if rc.registryUpSince.IsZero() {
		rc.registryUpSince = time.Now()
	}
	return time.Since(rc.registryUpSince) >= rc.catalog.ttl
}

// Run reconciles every interval until ctx ends. It looks more often when
// the interval is long, so that its lease, renewed at each look, does not
// lapse between passes.
func (rc *Reconciler) Run(ctx context.Context) error {
	tick := min(rc.interval, events.LeaseTTL/3)
	t := time.NewTicker(tick)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			rc.lease.Release()
			return nil
		case <-t.C:
		}
		// The registry is looked at by every replica, lease or not, so
		// that one taking the lease over knows how long it has answered.
		if !rc.connectedForTTL() || !rc.catalog.settled() || !rc.registryUpForTTL(ctx) || !rc.lease.Hold(ctx) {
			continue
		}
		if !due(last, time.Now(), tick, rc.interval) {
			continue
		}
		last = time.Now()
		if err := rc.reconcile(ctx); errors.Is(err, errLeaseLost) {
			rc.log.Info("the reconciler lease went to another replica during a pass")
		} else if err != nil {
			rc.log.Warn("reconcile failed", "err", err)
		}
	}
}

// due reports whether a pass is due at now, the last one at last (zero:
// none yet), looking every tick for one every interval. A tick that comes a
// little early is not skipped: half a tick of slack.
func due(last, now time.Time, tick, interval time.Duration) bool {
	return last.IsZero() || now.Sub(last)+tick/2 >= interval
}

// reconcile looks at every held run, a page at a time, and at a page of the
// runs waiting for an executor.
func (rc *Reconciler) reconcile(ctx context.Context) error {
	if err := rc.reconcileHeld(ctx); err != nil {
		return err
	}
	return rc.requeueLost(ctx)
}

// reconcileHeld looks at every held run, a page at a time.
func (rc *Reconciler) reconcileHeld(ctx context.Context) error {
	gone := map[string]bool{}
	for after := int64(0); ; {
		runs, err := rc.store.HeldRuns(ctx, after, rc.page)
		if err != nil {
			return err
		}
		if err := rc.repair(ctx, runs, gone); err != nil {
			return err
		}
		if len(runs) < rc.page {
			return nil
		}
		after = runs[len(runs)-1].Seq
	}
}

// repair marks the runs of executors that are gone PREEMPTED (CANCELED if
// they were being canceled). gone caches what the registry said of each
// executor.
func (rc *Reconciler) repair(ctx context.Context, runs []models.Run, gone map[string]bool) error {
	for _, r := range runs {
		if r.Executor == "" || rc.catalog.live(r.Executor) {
			continue
		}
		dead, ok := gone[r.Executor]
		if !ok {
			var err error
			if dead, err = rc.gone(ctx, r.Executor); err != nil {
				rc.log.Warn("cannot tell whether an executor is gone; its runs wait for the next pass", "executor", r.Executor, "err", err)
			}
			gone[r.Executor] = dead
		}
		if !dead {
			continue
		}
		// The workflow, as on every state change, for subscribers
		// (callbacks) that do not read the database.
		ev := events.RunEvent{RunID: r.ID, Attempt: r.Attempt, Source: events.SourceAPI, State: models.Preempted,
			SystemLog: fmt.Sprintf("executor %s stopped answering; the run waits for another executor", r.Executor),
			Workflow:  events.Ref(r.Request, r.Engine)}
		kind := "orphaned"
		if r.State == models.Canceling {
			ev.State, kind = models.Canceled, "orphaned_cancel"
			ev.SystemLog = fmt.Sprintf("executor %s stopped answering while canceling; canceled", r.Executor)
		}
		subject, msgID, data, err := rc.pub.EncodeEvent(ev)
		if err != nil {
			return err
		}
		// While the projector is behind, the run still looks held at the
		// next pass, and the event goes again: the stream drops the repeat.
		dup, err := rc.pub.PublishDedup(ctx, subject, msgID, data)
		if err != nil {
			return err
		}
		if dup {
			continue
		}
		rc.repairs.WithLabelValues(kind).Inc()
		rc.log.Warn("run repaired", "run_id", r.ID, "state", r.State, "executor", r.Executor, "new_state", ev.State)
	}
	return nil
}

// gone asks the registry itself whether executor id's entry has lapsed: the
// catalog may have missed its announcements.
func (rc *Reconciler) gone(ctx context.Context, id string) (bool, error) {
	_, err := rc.registry.Get(ctx, id)
	switch {
	case err == nil:
		rc.log.Debug("executor not heard from lately but still registered", "executor", id)
		return false, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return true, nil
	}
	return false, fmt.Errorf("look up executor %s: %w", id, err)
}

// requeueLost checks that the runs queue holds the message of every run
// waiting for an executor (QUEUED or PREEMPTED) that has not changed for
// RequeueAfter, every RequeueAfter/2, and queues again a run whose message
// JetStream lost. It should not happen; it was seen on a NATS 2.9 cluster
// whose consumer leader moved while runs were waiting to be retried
// (NakWithDelay): their messages left the work queue, unacknowledged, and
// the runs would have stayed QUEUED for ever. A message still in the stream
// at or below the consumer's ack floor is lost too: the consumer will never
// deliver it again. It is deleted before the run is queued anew.
//
// A pass reads the waiting runs a page at a time, for at most
// requeueBudget; the next one goes on after the last run it looked at.
// Queueing a run that was not lost after all is harmless: a delivery of a
// run that already ended is acknowledged without running it (the executor
// reads the run's events), and the takeover rules keep two attempts from
// both running it.
func (rc *Reconciler) requeueLost(ctx context.Context) error {
	now := time.Now()
	if now.Sub(rc.lastRequeue) < rc.requeueAfter/2 {
		return nil
	}
	rc.lastRequeue = now
	q := requeuePass{rc: rc, floors: map[string]uint64{}}
	for time.Since(now) < requeueBudget {
		runs, err := rc.store.StaleRuns(ctx, now.Add(-rc.requeueAfter), rc.staleAfter, rc.page)
		if err != nil {
			return err
		}
		for _, r := range runs {
			if err := q.check(ctx, r); err != nil {
				return err
			}
			rc.staleAfter = r.Seq
		}
		if len(runs) < rc.page {
			rc.staleAfter = 0 // from the first again next time
			return nil
		}
	}
	return nil
}

// requeueBudget bounds one pass of requeueLost.
const requeueBudget = 10 * time.Second

// requeuePass is what one pass of requeueLost looked up, once.
type requeuePass struct {
	rc     *Reconciler
	runs   jetstream.Stream
	events jetstream.Stream
	floors map[string]uint64 // the ack floor of each engine's consumer
	// projected is the position of the projector in the events stream:
	// events at or below it are in the database (applied or refused).
	projected *uint64
}

// check queues run r again if the queue lost its message.
func (q *requeuePass) check(ctx context.Context, r models.Run) error {
	rc := q.rc
	if q.runs == nil {
		stream, err := rc.js.Stream(ctx, rc.names.RunsStream())
		if err != nil {
			return fmt.Errorf("runs stream: %w", err)
		}
		q.runs = stream
	}
	// The ack floor first: a message at or below it, found after, was
	// acknowledged before and is still there.
	floor, ok := q.floors[r.Engine]
	if !ok {
		var err error
		if floor, err = ackFloor(ctx, q.runs, rc.names.ExecutorConsumer(r.Engine)); err != nil {
			return err
		}
		q.floors[r.Engine] = floor
	}
	var stale uint64
	msg, err := q.runs.GetLastMsgForSubject(ctx, rc.names.SubmitSubject(r.Engine, r.ID))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return fmt.Errorf("look up the queued message of run %s: %w", r.ID, err)
	case msg.Sequence > floor:
		return nil // waiting, or delivered and not yet settled: the consumer has it
	default:
		stale = msg.Sequence
	}
	if behind, err := q.projectionBehind(ctx, r); err != nil || behind {
		return err // if behind, the run may have moved on (even ended): not now
	}
	// The page was read before the lookups: the run may have been
	// delivered, run, settled and projected since (its message gone for
	// that reason). The row as it is now decides.
	now, err := rc.store.GetRun(ctx, r.ID)
	if err != nil {
		return err
	}
	if now.State != r.State || now.LastEventSeq != r.LastEventSeq {
		return nil
	}
	// Only the lease holder queues runs again: a pass can outlast the
	// lease, which another replica may then have taken.
	if !rc.lease.Hold(ctx) {
		return errLeaseLost
	}
	return rc.requeue(ctx, q.runs, *now, stale)
}

// errLeaseLost ends a pass of a reconciler that lost its lease.
var errLeaseLost = errors.New("lost the reconciler lease")

// projectionBehind reports whether the events stream holds an event of run
// r that the projector has not reached yet: the database's row says QUEUED
// while an executor may have run it to the end, and the message is gone
// for that reason.
func (q *requeuePass) projectionBehind(ctx context.Context, r models.Run) (bool, error) {
	rc := q.rc
	if q.projected == nil {
		pos, err := rc.store.Checkpoint(ctx, rc.names.EventsStream())
		if err != nil {
			return false, err
		}
		q.projected = &pos
	}
	if q.events == nil {
		evs, err := rc.js.Stream(ctx, rc.names.EventsStream())
		if err != nil {
			return false, fmt.Errorf("events stream: %w", err)
		}
		q.events = evs
	}
	last, err := q.events.GetLastMsgForSubject(ctx, rc.names.EventSubject(r.ID))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up the last event of run %s: %w", r.ID, err)
	}
	return last.Sequence > *q.projected, nil
}

// ackFloor returns the stream sequence of consumer's ack floor, 0 if there
// is no such consumer (no executor of its engine started yet).
func ackFloor(ctx context.Context, stream jetstream.Stream, consumer string) (uint64, error) {
	c, err := stream.Consumer(ctx, consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", consumer, err)
	}
	return c.CachedInfo().AckFloor.Stream, nil
}

// requeue queues run r again, after deleting its stale message (stream
// sequence stale, if not 0), and says so in the run's system logs. The
// message says how many attempts the run had, so that its deliveries go
// on from there; its id is the run's and its last event's, so that two
// replicas queueing the same run at once queue it once.
func (rc *Reconciler) requeue(ctx context.Context, stream jetstream.Stream, r models.Run, stale uint64) error {
	why := "JetStream lost the run's queued message"
	if stale > 0 {
		why = "the queue's consumer acknowledged the run's message without it being settled"
		if err := stream.DeleteMsg(ctx, stale); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("delete the stale message of run %s: %w", r.ID, err)
		}
	}
	subject, msgID, data, err := rc.pub.EncodeSubmitted(events.RunSubmitted{
		RunID: r.ID, Engine: r.Engine, Request: r.Request, Attachments: r.Attachments, SubmittedAt: r.CreatedAt,
		PriorAttempts: r.Attempt,
	})
	if err != nil {
		return err
	}
	if err := rc.pub.Publish(ctx, subject, fmt.Sprintf("%s.requeued.%d", msgID, r.LastEventSeq), data); err != nil {
		return err
	}
	rc.repairs.WithLabelValues("requeued").Inc()
	rc.log.Warn("run queued again", "run_id", r.ID, "state", r.State, "attempt", r.Attempt, "why", why)
	note := fmt.Sprintf("%s while the run waited for an executor (%s for %s); queued again", why, r.State, time.Since(r.UpdatedAt).Round(time.Second))
	return rc.pub.PublishEvent(ctx, events.RunEvent{RunID: r.ID, Source: events.SourceAPI, SystemLog: note})
}
