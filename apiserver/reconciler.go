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
}

// eventPublisher publishes a run event.
type eventPublisher interface {
	PublishEvent(ctx context.Context, ev events.RunEvent) error
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

	// reconnects is the connection's reconnect count when last looked at;
	// connectedSince is when it was last seen to change (or to connect).
	reconnects     uint64
	connectedSince time.Time
	// registryUpSince is since when the registry's stream has answered
	// every look; zero after it did not.
	registryUpSince time.Time
}

// NewReconciler returns a reconciler that looks every interval; holder
// names this replica in the lease.
func NewReconciler(store HeldRunsStore, catalog *Catalog, bus *events.Bus, holder string, interval time.Duration, reg prometheus.Registerer, log *slog.Logger) *Reconciler {
	repairs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wes_reconciler_repairs_total", Help: "Runs repaired by the reconciler, by kind.",
	}, []string{"kind"})
	reg.MustRegister(repairs)
	return &Reconciler{
		store: store, catalog: catalog, registry: bus.Executors, conn: bus.JS.Conn(),
		pub: events.NewPublisher(bus.JS, bus.Names), lease: events.NewLease(bus, "reconciler", holder),
		interval: interval, page: 1000, log: log.With("component", "reconciler"), repairs: repairs,
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
		if err := rc.reconcile(ctx); err != nil {
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

// reconcile looks at every held run, a page at a time.
func (rc *Reconciler) reconcile(ctx context.Context) error {
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
		if err := rc.pub.PublishEvent(ctx, ev); err != nil {
			return err
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
