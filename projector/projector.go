package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// Store is what the projector needs of the run store.
type Store interface {
	UpdateRuns(ctx context.Context, updates []models.RunUpdate) ([]error, error)
}

// Projector applies run events to the store.
type Projector struct {
	holder string
	store  Store
	bus    *events.Bus
	log    *slog.Logger
	m      metrics
}

type metrics struct {
	events      *prometheus.CounterVec
	transitions *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	lag         prometheus.Gauge
}

// New returns a projector; call Run to start it. holder names this process
// in the projector lease. Its metrics go to reg.
func New(store Store, bus *events.Bus, holder string, reg prometheus.Registerer, log *slog.Logger) *Projector {
	if log == nil {
		log = slog.Default()
	}
	m := metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wes_projector_events_total",
			Help: "Run events seen by the projector, by result (applied, dropped: refused by the transition table or of an older attempt, duplicate, poison).",
		}, []string{"result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wes_run_transitions_total", Help: "Run state changes applied, by new state and engine.",
		}, []string{"state", "engine"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wes_run_duration_seconds", Help: "Time from leaving the queue to a final state, by engine and outcome.",
			Buckets: prometheus.ExponentialBuckets(1, 2.5, 12),
		}, []string{"engine", "outcome"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wes_projector_lag_seconds", Help: "Age of the last event applied when it was applied.",
		}),
	}
	reg.MustRegister(m.events, m.transitions, m.durations, m.lag)
	return &Projector{holder: holder, store: store, bus: bus, log: log.With("component", "projector"), m: m}
}

// Run applies events until ctx ends. One projector at a time (across API
// replicas) holds the projector lease and consumes; the others stand by
// and take over when its lease lapses. The holder takes the events waiting
// in batches and applies each batch in stream order in one transaction.
func (p *Projector) Run(ctx context.Context) error {
	lease := events.NewLease(p.bus, "projector", p.holder)
	defer lease.Release()
	for {
		if lease.Hold(ctx) {
			if err := p.project(ctx, lease); err != nil && ctx.Err() == nil {
				p.log.Warn("projector paused", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

// batchSize bounds the events applied in one transaction.
const batchSize = 256

// project consumes while this process holds the lease.
func (p *Projector) project(ctx context.Context, lease *events.Lease) error {
	cons, err := p.bus.JS.CreateOrUpdateConsumer(ctx, p.bus.Names.EventsStream(), jetstream.ConsumerConfig{
		Durable:     p.bus.Names.ProjectorConsumer(),
		Description: "writes run events into the database",
		AckPolicy:   jetstream.AckExplicitPolicy,
		// Shorter than the lease's TTL: what a crashed holder fetched is
		// redeliverable, and delivered first, by the time another holder
		// takes over.
		AckWait:       10 * time.Second,
		MaxAckPending: 4 * batchSize,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("create projector consumer: %w", err)
	}
	renewed := time.Now()
	for ctx.Err() == nil {
		if time.Since(renewed) > 5*time.Second {
			if !lease.Hold(ctx) {
				return errors.New("lost the projector lease")
			}
			renewed = time.Now()
		}
		// Wait for one event, then take every event already waiting.
		wait, cancel := context.WithTimeout(ctx, 2*time.Second)
		first, err := cons.Fetch(1, jetstream.FetchContext(wait))
		var msgs []jetstream.Msg
		if err == nil {
			for m := range first.Messages() {
				msgs = append(msgs, m)
			}
		}
		cancel()
		if len(msgs) == 0 {
			continue
		}
		if more, err := cons.FetchNoWait(batchSize - 1); err == nil {
			for m := range more.Messages() {
				msgs = append(msgs, m)
			}
		}
		p.applyBatch(ctx, lease, msgs)
	}
	return nil
}

// entry is one fetched event on its way through applyBatch.
type entry struct {
	msg   jetstream.Msg
	ev    events.RunEvent
	seq   uint64
	after models.Run
}

// applyBatch applies the decodable events of msgs in one transaction and
// settles every message: Ack (applied, duplicate, dropped), dead letter
// (poison, or refused by the database), or Nak for all when the database
// stayed unreachable until ctx ended or the lease was lost.
func (p *Projector) applyBatch(ctx context.Context, lease *events.Lease, msgs []jetstream.Msg) {
	var batch []*entry
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			p.m.events.WithLabelValues("poison").Inc()
			_ = msg.Term()
			continue
		}
		ev, err := events.DecodeRunEvent(msg.Data())
		if err != nil {
			p.m.events.WithLabelValues("poison").Inc()
			p.log.Error("undecodable run event, dead-lettering it", "err", err, "stream_seq", meta.Sequence.Stream, "subject", msg.Subject())
			if err := events.DeadLetter(ctx, p.bus, msg, "undecodable: "+err.Error()); err != nil {
				p.log.Error("cannot dead-letter event", "err", err)
			}
			continue
		}
		batch = append(batch, &entry{msg: msg, ev: ev, seq: meta.Sequence.Stream})
	}
	updates := make([]models.RunUpdate, len(batch))
	for i, e := range batch {
		updates[i] = models.RunUpdate{ID: e.ev.RunID, Fn: func(r *models.Run) ([]models.TaskLog, error) {
			tasks, err := Apply(r, e.ev, e.seq)
			e.after = *r
			return tasks, err
		}}
	}
	if len(updates) == 0 {
		return
	}
	results, err := p.store.UpdateRuns(ctx, updates)
	if err != nil && !errors.Is(err, models.ErrUnavailable) && len(updates) > 1 {
		// The database refused something in the batch: apply the events
		// one by one, so that the one it refuses is set aside alone.
		p.log.Warn("batch refused, applying its events one by one", "events", len(batch), "err", err)
		results = make([]error, len(updates))
		for i := range updates {
			if results[i], err = p.applyOne(ctx, lease, updates[i]); err != nil {
				break
			}
		}
	} else if err != nil && !errors.Is(err, models.ErrUnavailable) {
		results, err = []error{fmt.Errorf("%w: %w", errRefused, err)}, nil
	}
	if err != nil {
		// The database is unreachable: retry the same batch until it is
		// applied. Handing it back would let newer events overtake it, and
		// order is what keeps the state exact.
		if results, err = p.retry(ctx, lease, batch, updates, err); err != nil {
			p.log.Warn("batch handed back", "events", len(batch), "err", err)
			for _, e := range batch {
				_ = e.msg.Nak()
			}
			return
		}
	}
	for i, e := range batch {
		p.settle(ctx, e, results[i])
	}
}

// errRefused marks an event the database refuses to store.
var errRefused = errors.New("refused by the database")

// applyOne applies one update alone, waiting out an unreachable database.
// An update the database refuses gets errRefused.
func (p *Projector) applyOne(ctx context.Context, lease *events.Lease, u models.RunUpdate) (result, err error) {
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		res, err := p.store.UpdateRuns(ctx, []models.RunUpdate{u})
		switch {
		case err == nil:
			return res[0], nil
		case !errors.Is(err, models.ErrUnavailable):
			return fmt.Errorf("%w: %w", errRefused, err), nil
		}
		if err := p.pause(ctx, lease, delay, nil); err != nil {
			return nil, err
		}
	}
}

// retry applies updates until the database takes them, keeping batch's
// messages in progress meanwhile. It gives up when ctx ends or this process
// loses the lease (another projector may be applying newer events).
func (p *Projector) retry(ctx context.Context, lease *events.Lease, batch []*entry, updates []models.RunUpdate, err error) ([]error, error) {
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		p.log.Warn("cannot apply events, retrying", "events", len(batch), "err", err, "retry_in", delay)
		if err := p.pause(ctx, lease, delay, batch); err != nil {
			return nil, err
		}
		var results []error
		if results, err = p.store.UpdateRuns(ctx, updates); err == nil {
			return results, nil
		}
	}
}

// pause waits delay, keeping batch in progress, and checks that this
// process still holds the lease.
func (p *Projector) pause(ctx context.Context, lease *events.Lease, delay time.Duration, batch []*entry) error {
	for _, e := range batch {
		_ = e.msg.InProgress()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(delay):
	}
	if !lease.Hold(ctx) {
		return errors.New("lost the projector lease")
	}
	return nil
}

func (p *Projector) settle(ctx context.Context, e *entry, err error) {
	ev := e.ev
	log := p.log.With("run_id", ev.RunID, "state", ev.State, "attempt", ev.Attempt, "stream_seq", e.seq)
	switch {
	case err == nil:
		p.m.events.WithLabelValues("applied").Inc()
		p.m.lag.Set(time.Since(ev.Time).Seconds())
		if ev.State != "" {
			p.m.transitions.WithLabelValues(string(ev.State), e.after.Engine).Inc()
			if ev.State.Terminal() && e.after.StartTime != nil && e.after.EndTime != nil {
				p.m.durations.WithLabelValues(e.after.Engine, string(ev.State)).Observe(e.after.EndTime.Sub(*e.after.StartTime).Seconds())
			}
		}
		log.Debug("event applied")
		_ = e.msg.Ack()
	case errors.Is(err, errDuplicate):
		p.m.events.WithLabelValues("duplicate").Inc()
		_ = e.msg.Ack()
	case errors.Is(err, models.ErrSkip):
		p.m.events.WithLabelValues("dropped").Inc()
		log.Info("event dropped", "reason", err)
		_ = e.msg.Ack()
	case errors.Is(err, errRefused):
		p.m.events.WithLabelValues("poison").Inc()
		log.Error("the database refuses this event, dead-lettering it", "err", err)
		if err := events.DeadLetter(ctx, p.bus, e.msg, err.Error()); err != nil {
			log.Error("cannot dead-letter event", "err", err)
		}
	case errors.Is(err, models.ErrNotFound):
		p.m.events.WithLabelValues("poison").Inc()
		log.Error("event for an unknown run, dead-lettering it")
		if err := events.DeadLetter(ctx, p.bus, e.msg, "event for an unknown run"); err != nil {
			log.Error("cannot dead-letter event", "err", err)
		}
	default:
		log.Warn("cannot apply event, will retry", "err", err)
		_ = e.msg.NakWithDelay(time.Second)
	}
}

var errDuplicate = fmt.Errorf("%w: event already applied", models.ErrSkip)

// maxSystemLogs bounds a run's system_logs.
const maxSystemLogs = 200

// Apply changes r as ev says, if the transition table allows it. seq is the
// event's stream sequence: an event at or below the last one applied is a
// replay. Refused events return an error wrapping models.ErrSkip.
func Apply(r *models.Run, ev events.RunEvent, seq uint64) ([]models.TaskLog, error) {
	if seq <= r.LastEventSeq {
		return nil, errDuplicate
	}
	attempt := ev.Attempt
	if attempt == 0 { // API events concern whatever attempt is current
		attempt = r.Attempt
	}
	if ev.State == "" {
		if attempt < r.Attempt {
			return nil, fmt.Errorf("%w: %w", models.ErrSkip, models.ErrStaleAttempt)
		}
	} else {
		if err := models.ValidateAttemptTransition(r.State, r.Attempt, ev.State, attempt); err != nil {
			return nil, fmt.Errorf("%w: %w", models.ErrSkip, err)
		}
		if attempt > r.Attempt {
			// A new attempt starts afresh: what the last one reported about
			// its engine no longer describes the run.
			r.Attempt, r.Cmd, r.ExitCode = attempt, nil, nil
		}
		r.State = ev.State
		if ev.Source != "" && ev.Source != events.SourceAPI {
			r.Executor = ev.Source
		}
		t := ev.Time.UTC()
		switch {
		case ev.State == models.Initializing && r.StartTime == nil:
			r.StartTime = &t
		case ev.State == models.Running && len(ev.Cmd) > 0:
			r.Cmd = ev.Cmd
		case ev.State.Terminal():
			r.EndTime = &t
		}
	}
	if ev.ExitCode != nil {
		code := *ev.ExitCode
		r.ExitCode = &code
	}
	if len(ev.Outputs) > 0 {
		r.Outputs = ev.Outputs
	}
	if ev.Error != "" {
		r.ErrorMessage = ev.Error
	}
	if ev.SystemLog != "" && len(r.SystemLogs) < maxSystemLogs {
		r.SystemLogs = append(r.SystemLogs, ev.Time.UTC().Format(time.RFC3339)+" "+ev.SystemLog)
	}
	r.LastEventSeq = seq
	return ev.Tasks, nil
}
