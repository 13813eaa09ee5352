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
	Checkpoint(ctx context.Context, name string) (uint64, error)
	ForgetEventPositions(ctx context.Context, name string, pos uint64) error
	ProjectRuns(ctx context.Context, cp models.Checkpoint, updates []models.RunUpdate, beforeCommit func([]error) error) ([]error, error)
}

// Projector applies run events to the store.
type Projector struct {
	holder string
	store  Store
	bus    *events.Bus
	log    *slog.Logger
	m      metrics
	// linger is how long a batch waits for more events (batchLinger).
	linger time.Duration
}

type metrics struct {
	batches     prometheus.Histogram
	events      *prometheus.CounterVec
	transitions *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	lag         prometheus.Gauge
	backlog     prometheus.Gauge
}

// New returns a projector; call Run to start it. holder names this process
// in the projector lease. Its metrics go to reg.
func New(store Store, bus *events.Bus, holder string, reg prometheus.Registerer, log *slog.Logger) *Projector {
	if log == nil {
		log = slog.Default()
	}
	m := metrics{
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wes_projector_batch_events", Help: "Events applied per database transaction by the projector.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
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
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wes_projector_backlog_events", Help: "Events in the stream beyond the projector's stored position, as of the active projector's last look (every few seconds).",
		}),
	}
	reg.MustRegister(m.batches, m.events, m.transitions, m.durations, m.lag, m.backlog)
	return &Projector{holder: holder, store: store, bus: bus, log: log.With("component", "projector"), m: m, linger: batchLinger}
}

// Run applies events until ctx ends. One projector at a time (across API
// replicas) holds the projector lease and consumes; the others stand by
// and take over when its lease lapses.
//
// The holder reads the events stream in order from the position stored in
// the database (an ordered consumer, which restarts itself where it left
// off when a message goes missing in flight) and applies what waits in
// batches, each in one transaction that also moves the stored position.
// So every event is applied exactly once and in stream order, whatever
// NATS redelivers or loses in flight, and a projector that lost the lease
// without knowing it cannot apply anything (its position is stale).
func (p *Projector) Run(ctx context.Context) error {
	lease := events.NewLease(p.bus, "projector", p.holder)
	defer lease.Release()
	retired, recreated := false, false
	for {
		if lease.Hold(ctx) {
			err := error(nil)
			if !retired {
				err = p.retireLegacyConsumer(ctx)
				retired = err == nil
			}
			if err == nil {
				// After a stream was seen recreated, it is read from its
				// start, whatever it holds by now.
				err = p.project(ctx, lease, recreated)
				if errors.Is(err, errStreamRecreated) {
					recreated = true
				} else if err == nil || !errors.Is(err, errResetFailed) {
					recreated = false
				}
			}
			if err != nil && ctx.Err() == nil {
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

// retireLegacyConsumer retires the durable consumer that projectors used
// before the stored checkpoint: where no checkpoint exists yet it starts
// from the consumer's ack floor (every event at or below it was applied),
// rather than from the stream's start; then it deletes the consumer, which
// would otherwise keep every event as unacknowledged work for ever. It
// fails when it cannot tell whether there is such a consumer.
func (p *Projector) retireLegacyConsumer(ctx context.Context) error {
	name := p.bus.Names.EventsStream()
	cons, err := p.bus.JS.Consumer(ctx, name, p.bus.Names.ProjectorConsumer())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look for the legacy projector consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the legacy projector consumer: %w", err)
	}
	if floor := info.AckFloor.Stream; floor > 0 {
		_, err := p.store.ProjectRuns(ctx, models.Checkpoint{Name: name, From: 0, To: floor}, nil, nil)
		switch {
		case err == nil:
			p.log.Info("took the legacy projector consumer's position", "checkpoint", floor)
		case !errors.Is(err, models.ErrCheckpointMoved): // moved: a checkpoint exists already
			return fmt.Errorf("take the legacy projector consumer's position: %w", err)
		}
	}
	if err := p.bus.JS.DeleteConsumer(ctx, name, p.bus.Names.ProjectorConsumer()); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete the legacy projector consumer: %w", err)
	}
	p.log.Info("deleted the projector's legacy durable consumer")
	return nil
}

const (
	// batchSize bounds the events applied in one transaction.
	batchSize = 256
	// batchLinger is how long a batch waits for more events after its
	// first. A short run's events come milliseconds apart: waiting puts
	// them in one transaction instead of one each.
	batchLinger = 10 * time.Millisecond
)

var (
	errLeaseLost       = errors.New("lost the projector lease")
	errStreamRecreated = errors.New("the events stream was deleted or made again under the projector")
	errResetFailed     = errors.New("cannot start reading the recreated events stream from its start")
)

// project consumes while this process holds the lease; recreated says the
// events stream was seen deleted or made again, and is to be read from its
// start.
func (p *Projector) project(ctx context.Context, lease *events.Lease, recreated bool) error {
	name := p.bus.Names.EventsStream()
	pos, err := p.store.Checkpoint(ctx, name)
	if err != nil {
		return err
	}
	stream, err := p.bus.JS.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	// floor: events at or below it were applied.
	start, floor := pos+1, pos
	if st := stream.CachedInfo().State; recreated || st.LastSeq < pos {
		p.log.Error("the events stream was recreated (or is behind the projector's checkpoint): reading it from its start",
			"checkpoint", pos, "stream_last_seq", st.LastSeq, "seen_recreated", recreated)
		// Its events' sequence numbers start again: runs must not take
		// them for events they have seen.
		if err := p.store.ForgetEventPositions(ctx, name, pos); err != nil {
			return fmt.Errorf("%w: %w", errResetFailed, err)
		}
		start, floor = 1, 0
	} else if st.Msgs > 0 && st.FirstSeq > start {
		p.log.Error("events expired from the stream before they were applied", "checkpoint", pos,
			"stream_first_seq", st.FirstSeq, "lost", st.FirstSeq-start)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
	})
	if err != nil {
		return fmt.Errorf("events consumer: %w", err)
	}
	msgs := make(chan jetstream.Msg, batchSize)
	done := make(chan struct{})
	// The stream deleted (and maybe made again, its sequence numbers from
	// 1) under the consumer: the ordered consumer would go on at the old
	// position in the new stream, past its first events. Start again,
	// which checks the stream against the checkpoint.
	gone := make(chan error, 1)
	created := stream.CachedInfo().Created
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-done:
		}
	}, jetstream.PullMaxMessages(batchSize), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		p.log.Warn("events consumer", "err", err)
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) {
			select {
			case gone <- err:
			default:
			}
		}
	}))
	if err != nil {
		return fmt.Errorf("consume events: %w", err)
	}
	defer func() {
		close(done)
		cc.Stop()
	}()
	var renewed time.Time
	for {
		if time.Since(renewed) > 5*time.Second {
			if !lease.Hold(ctx) {
				return errLeaseLost
			}
			renewed = time.Now()
			info, err := stream.Info(ctx)
			if err == nil && !info.Created.Equal(created) {
				return fmt.Errorf("%w (created %s, was %s)", errStreamRecreated, info.Created, created)
			}
			if err == nil && info.State.LastSeq >= pos {
				p.m.backlog.Set(float64(info.State.LastSeq - pos))
			}
		}
		// Wait for one event, then for more, until the batch is full or
		// batchLinger has passed.
		var batch []jetstream.Msg
		select {
		case <-ctx.Done():
			return nil
		case err := <-gone:
			return fmt.Errorf("%w: %w", errStreamRecreated, err)
		case m := <-msgs:
			batch = append(batch, m)
		case <-time.After(2 * time.Second):
			continue
		}
		linger := time.NewTimer(p.linger)
	more:
		for len(batch) < batchSize {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			case <-linger.C:
				break more
			case <-ctx.Done():
				linger.Stop()
				return nil
			}
		}
		linger.Stop()
		if pos, err = p.applyBatch(ctx, lease, pos, floor, batch); err != nil {
			return err
		}
		floor = pos
	}
}

// entry is one event on its way through applyBatch.
type entry struct {
	msg jetstream.Msg
	seq uint64
	ev  events.RunEvent
	// dead says why the event goes to the dead-letter stream instead of
	// being applied; empty for an event to apply.
	dead   string
	result error
	after  models.Run
}

func (e *entry) apply(r *models.Run) ([]models.TaskLog, error) {
	tasks, err := Apply(r, e.ev, e.seq)
	e.after = *r
	return tasks, err
}

// applyBatch applies msgs, skipping those at or below floor, moves the
// stored position from pos to the last of them, and returns it.
// Undecodable events and events for unknown runs go to the dead-letter
// stream; if the database refuses the batch its events are applied one by
// one, so that the one it refuses is set aside alone. An
// error means that nothing more can be applied from where this process
// stands: ctx ended, the lease is lost, or another projector moved on.
func (p *Projector) applyBatch(ctx context.Context, lease *events.Lease, pos, floor uint64, msgs []jetstream.Msg) (uint64, error) {
	entries := make([]*entry, 0, len(msgs))
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			return pos, fmt.Errorf("event without metadata: %w", err)
		}
		if meta.Sequence.Stream <= floor {
			continue // applied already
		}
		e := &entry{msg: msg, seq: meta.Sequence.Stream}
		if e.ev, err = events.DecodeRunEvent(msg.Data()); err != nil {
			e.dead = "undecodable: " + err.Error()
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return pos, nil
	}
	cp := models.Checkpoint{Name: p.bus.Names.EventsStream(), From: pos, To: entries[len(entries)-1].seq}
	err := p.commit(ctx, lease, cp, entries)
	if err == nil {
		for _, e := range entries {
			p.settle(e)
		}
		return cp.To, nil
	}
	if !errors.Is(err, errRefused) {
		return pos, err
	}
	if len(entries) > 1 {
		p.log.Warn("batch refused, applying its events one by one", "events", len(entries), "err", err)
	}
	for _, e := range entries {
		one := models.Checkpoint{Name: cp.Name, From: pos, To: e.seq}
		err := p.commit(ctx, lease, one, []*entry{e})
		if errors.Is(err, errRefused) {
			e.dead = err.Error()
			err = p.commit(ctx, lease, one, []*entry{e})
		}
		if err != nil {
			return pos, err
		}
		p.settle(e)
		pos = e.seq
	}
	return pos, nil
}

// errRefused marks events the database refuses to store.
var errRefused = errors.New("refused by the database")

// errDeadLetter marks a failed dead-letter publish.
var errDeadLetter = errors.New("cannot dead-letter")

// commit applies entries and moves the checkpoint as cp says, in one
// transaction, after publishing the entries that are poison to the
// dead-letter stream. While the database or NATS is unreachable it retries
// (keeping the order that keeps the state exact), as long as this process
// holds the lease. It fails with errRefused when the database refuses the
// batch, and with ErrCheckpointMoved when another projector applied it.
func (p *Projector) commit(ctx context.Context, lease *events.Lease, cp models.Checkpoint, entries []*entry) error {
	var (
		applied []*entry
		updates []models.RunUpdate
	)
	for _, e := range entries {
		if e.dead == "" {
			applied = append(applied, e)
			updates = append(updates, models.RunUpdate{ID: e.ev.RunID, Fn: e.apply})
		}
	}
	deadLetter := func(results []error) error {
		for i, e := range applied {
			if errors.Is(results[i], models.ErrNotFound) {
				if err := events.PublishDeadLetter(ctx, p.bus, e.msg, "event for an unknown run"); err != nil {
					return fmt.Errorf("%w: %w", errDeadLetter, err)
				}
			}
		}
		for _, e := range entries {
			if e.dead != "" {
				if err := events.PublishDeadLetter(ctx, p.bus, e.msg, e.dead); err != nil {
					return fmt.Errorf("%w: %w", errDeadLetter, err)
				}
			}
		}
		return nil
	}
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		results, err := p.store.ProjectRuns(ctx, cp, updates, deadLetter)
		switch {
		case err == nil:
			for i, e := range applied {
				e.result = results[i]
			}
			p.m.batches.Observe(float64(len(entries)))
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, models.ErrCheckpointMoved):
			return err
		case !errors.Is(err, models.ErrUnavailable) && !errors.Is(err, errDeadLetter):
			return fmt.Errorf("%w: %w", errRefused, err)
		}
		p.log.Warn("cannot apply events, retrying", "events", len(entries), "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if !lease.Hold(ctx) {
			return errLeaseLost
		}
	}
}

// settle counts and logs what became of a committed entry.
func (p *Projector) settle(e *entry) {
	ev := e.ev
	log := p.log.With("run_id", ev.RunID, "state", ev.State, "attempt", ev.Attempt, "stream_seq", e.seq)
	switch err := e.result; {
	case e.dead != "":
		p.m.events.WithLabelValues("poison").Inc()
		log.Error("event dead-lettered", "reason", e.dead, "subject", e.msg.Subject())
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
	case errors.Is(err, errDuplicate):
		p.m.events.WithLabelValues("duplicate").Inc()
	case errors.Is(err, models.ErrSkip):
		p.m.events.WithLabelValues("dropped").Inc()
		log.Info("event dropped", "reason", err)
	case errors.Is(err, models.ErrNotFound):
		p.m.events.WithLabelValues("poison").Inc()
		log.Error("event for an unknown run dead-lettered")
	default:
		p.m.events.WithLabelValues("dropped").Inc()
		log.Error("event dropped", "err", err)
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
