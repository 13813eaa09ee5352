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
	UpdateRun(ctx context.Context, id string, fn func(*models.Run) ([]models.TaskLog, error)) error
}

// Projector applies run events to the store.
type Projector struct {
	store Store
	bus   *events.Bus
	log   *slog.Logger
	m     metrics
}

type metrics struct {
	events      *prometheus.CounterVec
	transitions *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	lag         prometheus.Gauge
}

// New returns a projector; call Run to start it. Its metrics go to reg.
func New(store Store, bus *events.Bus, reg prometheus.Registerer, log *slog.Logger) *Projector {
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
	return &Projector{store: store, bus: bus, log: log.With("component", "projector"), m: m}
}

// Run consumes events until ctx ends. Its durable consumer allows one
// unacknowledged event at a time, so events are applied in stream order
// even when several projectors (API replicas) share it.
func (p *Projector) Run(ctx context.Context) error {
	return events.Consume(ctx, p.bus.JS, p.bus.Names.EventsStream(), jetstream.ConsumerConfig{
		Durable:       p.bus.Names.ProjectorConsumer(),
		Description:   "writes run events into the database",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}, func(msg jetstream.Msg) { p.handle(ctx, msg) })
}

func (p *Projector) handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		p.m.events.WithLabelValues("poison").Inc()
		_ = msg.Term()
		return
	}
	ev, err := events.DecodeRunEvent(msg.Data())
	if err != nil {
		p.m.events.WithLabelValues("poison").Inc()
		p.log.Error("undecodable run event, dropping it", "err", err, "stream_seq", meta.Sequence.Stream, "subject", msg.Subject())
		if err := events.DeadLetter(ctx, p.bus, msg, "undecodable: "+err.Error()); err != nil {
			p.log.Error("cannot dead-letter event", "err", err)
		}
		return
	}
	log := p.log.With("run_id", ev.RunID, "state", ev.State, "attempt", ev.Attempt, "stream_seq", meta.Sequence.Stream)
	var after models.Run
	err = p.store.UpdateRun(ctx, ev.RunID, func(r *models.Run) ([]models.TaskLog, error) {
		tasks, err := Apply(r, ev, meta.Sequence.Stream)
		after = *r
		return tasks, err
	})
	switch {
	case err == nil:
		p.m.events.WithLabelValues("applied").Inc()
		p.m.lag.Set(time.Since(ev.Time).Seconds())
		if ev.State != "" {
			p.m.transitions.WithLabelValues(string(ev.State), after.Engine).Inc()
			if ev.State.Terminal() && after.StartTime != nil && after.EndTime != nil {
				p.m.durations.WithLabelValues(after.Engine, string(ev.State)).Observe(after.EndTime.Sub(*after.StartTime).Seconds())
			}
		}
		log.Debug("event applied")
		_ = msg.Ack()
	case errors.Is(err, errDuplicate):
		p.m.events.WithLabelValues("duplicate").Inc()
		_ = msg.Ack()
	case errors.Is(err, models.ErrSkip):
		p.m.events.WithLabelValues("dropped").Inc()
		log.Info("event dropped", "reason", err)
		_ = msg.Ack()
	case errors.Is(err, models.ErrNotFound):
		p.m.events.WithLabelValues("poison").Inc()
		log.Error("event for an unknown run, dropping it")
		_ = events.DeadLetter(ctx, p.bus, msg, "event for an unknown run")
	default:
		log.Warn("cannot apply event, will retry", "err", err)
		_ = msg.NakWithDelay(time.Second)
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
