package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// HeldRunsStore is what the reconciler needs of the run store.
type HeldRunsStore interface {
	HeldRuns(ctx context.Context, limit int) ([]models.Run, error)
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
type Reconciler struct {
	store    HeldRunsStore
	catalog  *Catalog
	pub      eventPublisher
	lease    *events.Lease
	interval time.Duration
	log      *slog.Logger
	repairs  *prometheus.CounterVec
}

// NewReconciler returns a reconciler that looks every interval; holder
// names this replica in the lease.
func NewReconciler(store HeldRunsStore, catalog *Catalog, bus *events.Bus, holder string, interval time.Duration, reg prometheus.Registerer, log *slog.Logger) *Reconciler {
	repairs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wes_reconciler_repairs_total", Help: "Runs repaired by the reconciler, by kind.",
	}, []string{"kind"})
	reg.MustRegister(repairs)
	return &Reconciler{
		store: store, catalog: catalog, pub: events.NewPublisher(bus.JS, bus.Names), lease: events.NewLease(bus, "reconciler", holder),
		interval: interval, log: log.With("component", "reconciler"), repairs: repairs,
	}
}

// Run reconciles until ctx ends.
func (rc *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(rc.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			rc.lease.Release()
			return nil
		case <-t.C:
		}
		if !rc.catalog.settled() || !rc.lease.Hold(ctx) {
			continue
		}
		if err := rc.reconcile(ctx); err != nil {
			rc.log.Warn("reconcile failed", "err", err)
		}
	}
}

func (rc *Reconciler) reconcile(ctx context.Context) error {
	runs, err := rc.store.HeldRuns(ctx, 1000)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.Executor == "" || rc.catalog.live(r.Executor) {
			continue
		}
		ev := events.RunEvent{RunID: r.ID, Attempt: r.Attempt, Source: events.SourceAPI, State: models.Preempted,
			SystemLog: fmt.Sprintf("executor %s stopped answering; the run waits for another executor", r.Executor)}
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
