package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/providers"
)

// Config tunes an executor.
type Config struct {
	// ID names this executor in the registry and in events.
	ID string
	// Slots is how many runs execute at once.
	Slots int
	// QueueHandBacksAnew queues a run handed back at shutdown as a new
	// message, rather than handing its message back (Nak): for a NATS
	// server that stops with the executor (wes dev's embedded one), which
	// would deliver a Nak'd message only AckWait after it is back. Where
	// the server runs on, a Nak keeps the run ahead of the queue.
	QueueHandBacksAnew bool
	// WorkDir holds one directory per run.
	WorkDir string
	// AckWait is how long JetStream waits for a heartbeat before it gives
	// the run to another executor.
	AckWait time.Duration
	// ShutdownGrace is how long in-flight runs may go on after a shutdown
	// request before they are handed back.
	ShutdownGrace time.Duration
	// RegistryInterval is how often the executor announces itself.
	RegistryInterval time.Duration
	// MaxAttempts bounds the attempts at a run whose failure is retryable,
	// and the attempts at a run that ended without an outcome (the executor
	// crashed). Hand-backs by executors that shut down do not count.
	MaxAttempts int
	// MaxHandBacks is how many deliveries beyond MaxAttempts a run may have
	// in all: a run handed back more often than that, or whose hand-backs
	// cannot be told from crashes, ends in SYSTEM_ERROR (see attempts.go).
	MaxHandBacks int
	// ReportTimeout is how long an attempt's outcome may take to reach
	// JetStream; after it the message is handed back to be delivered again.
	ReportTimeout time.Duration
	// MaxEventBytes bounds one event; 0 means the connection's max_payload
	// (less room for headers), which also bounds any larger setting. An
	// outputs object that does not fit is replaced by a note.
	MaxEventBytes int
	// RetryFailures retries workflow failures (EXECUTOR_ERROR) of runs that
	// do not say otherwise with their wes.retry_failures tag.
	RetryFailures bool
	// LogInterval is how often growing logs are copied to the object store.
	LogInterval time.Duration
	// MaxOutputBytes bounds the output files of one run kept in the object
	// store.
	MaxOutputBytes int64
	// LocalOutputLocations leaves output locations as the engine's file
	// paths (for clients that share the executor's filesystem); run
	// directories are then kept.
	LocalOutputLocations bool
	// KeepRunDirs keeps a run's directory once the run is over; otherwise
	// it is removed when its logs and outputs are in the object store.
	KeepRunDirs bool
}

// Executor runs workflow runs pulled from the runs stream.
type Executor struct {
	cfg      Config
	bus      *events.Bus
	pub      *events.Publisher
	provider providers.Provider
	log      *slog.Logger

	m     metrics
	slots chan struct{}
	// hard is canceled, with errShutdown, when the grace period is over.
	hard       context.Context
	cancelHard context.CancelCauseFunc
	inflight   sync.WaitGroup
	cancels    *cancelWatch
	// running is the attempt in progress here of each run, by run id
	// (see claim). Guarded by runningMu.
	runningMu sync.Mutex
	running   map[string]*attempt
	// noEngine is set once Run found no engine to offer.
	noEngine atomic.Bool
	// versions are the offered engines' versions, by name; set by Run
	// before it takes a run.
	versions map[string]string
	// leftovers takes the directories of finished runs to remove, away
	// from the runs' slots (see sweep).
	leftovers chan string
}

var (
	errShutdown = errors.New("executor shutting down")
	errCanceled = errors.New("run canceled by the user")
)

type metrics struct {
	busy        prometheus.Gauge
	outcomes    *prometheus.CounterVec
	redelivered prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, slots int) metrics {
	total := prometheus.NewGauge(prometheus.GaugeOpts{Name: "wes_executor_slots", Help: "Execution slots of this executor."})
	total.Set(float64(slots))
	m := metrics{
		busy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wes_executor_slots_busy", Help: "Slots running a run now."}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wes_executor_attempts_total", Help: "Attempts finished by this executor, by engine and outcome.",
		}, []string{"engine", "outcome"}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wes_executor_redeliveries_total", Help: "Runs this executor received that had been delivered before (crash, hand-back, retry).",
		}),
	}
	reg.MustRegister(total, m.busy, m.outcomes, m.redelivered)
	return m
}

// New returns an executor; call Run to start it. Its metrics go to reg.
func New(cfg Config, bus *events.Bus, provider providers.Provider, reg prometheus.Registerer, log *slog.Logger) *Executor {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Slots < 1 {
		cfg.Slots = 1
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.RegistryInterval <= 0 {
		cfg.RegistryInterval = 10 * time.Second
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = 2 * time.Second
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = 1 << 30
	}
	if cfg.MaxAttempts < 1 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxHandBacks <= 0 {
		cfg.MaxHandBacks = 10
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = cfg.ShutdownGrace + time.Minute
	}
	if cfg.ID == "" {
		cfg.ID = DefaultID()
	}
	hard, cancel := context.WithCancelCause(context.Background())
	log = log.With("executor", cfg.ID)
	return &Executor{
		cfg: cfg, bus: bus, pub: events.NewPublisher(bus.JS, bus.Names), provider: provider,
		log:   log,
		slots: make(chan struct{}, cfg.Slots), hard: hard, cancelHard: cancel, m: newMetrics(reg, cfg.Slots),
		cancels:   newCancelWatch(bus.Cancel, log.With("component", "cancel-watch")),
		running:   map[string]*attempt{},
		leftovers: make(chan string, 4096),
	}
}

// ID names this executor (in the registry, in events).
func (e *Executor) ID() string { return e.cfg.ID }

// FoundNoEngine reports whether Run has looked for engines and found none.
func (e *Executor) FoundNoEngine() bool { return e.noEngine.Load() }

// DefaultID names an executor whose Config names none: hostname-pid.
func DefaultID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// Run pulls and executes runs until ctx ends, then shuts down softly: it
// stops pulling, lets running runs finish within the grace period, and
// hands back the rest so that another executor restarts them at once.
func (e *Executor) Run(ctx context.Context) error {
	defer e.cancelHard(errShutdown)
	engines, err := e.provider.Engines(ctx)
	if err != nil {
		return fmt.Errorf("detect engines: %w", err)
	}
	if ctx.Err() != nil {
		return nil // stopped while it looked for engines (the API could not listen, say)
	}
	if len(engines) == 0 {
		e.noEngine.Store(true)
		e.log.Warn("NO WORKFLOW ENGINE FOUND: this executor will take no runs; install an engine (see README) or set DEFAULT_WES_PROVIDER=mock")
	}
	e.versions = make(map[string]string, len(engines))
	for _, eng := range engines {
		// The name is a token of NATS subjects and consumer names.
		if !events.ValidEngineName(eng.Name) {
			return fmt.Errorf("engine name %q cannot name a queue (lower-case letters, digits and '-', at most 32, starting with a letter)", eng.Name)
		}
		e.log.Info("engine available", "engine", eng.Name, "version", eng.Version, "workflow_types", eng.WorkflowTypes)
		e.versions[eng.Name] = eng.Version
	}

	// The cancel watch outlives ctx: runs still finishing after a shutdown
	// request can be canceled too.
	wctx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); e.cancels.Run(wctx) }()
	defer func() { stopWatch(); <-watched }()

	swept := make(chan struct{})
	go func() { defer close(swept); e.sweep() }()
	defer func() { close(e.leftovers); <-swept }() // after the runs in flight

	// Every engine's ack wait agreed first, then every consumer, so that a
	// failure changes nothing and leaves nothing running.
	for _, eng := range engines {
		actx, cancel := context.WithTimeout(ctx, registryReadTimeout)
		err := e.agreeAckWait(actx, eng.Name)
		cancel()
		if err != nil {
			return err
		}
	}
	consumers := make([]jetstream.Consumer, len(engines))
	for i, eng := range engines {
		cons, err := e.bus.JS.CreateOrUpdateConsumer(ctx, e.bus.Names.RunsStream(), jetstream.ConsumerConfig{
			Durable:       e.bus.Names.ExecutorConsumer(eng.Name),
			Description:   "executors that run " + eng.Name,
			FilterSubject: e.bus.Names.SubmitFilter(eng.Name),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       e.cfg.AckWait,
			MaxDeliver:    -1,
		})
		if err != nil {
			return fmt.Errorf("create consumer for %s: %w", eng.Name, err)
		}
		consumers[i] = cons
	}
	g, gctx := errgroup.WithContext(ctx)
	// The registry lists this executor until the runs in flight are over
	// (after the soft stop below), as draining once pulling stops: the
	// reconciler must not take its runs for orphans meanwhile.
	actx, stopAnnouncing := context.WithCancel(context.Background())
	announced := make(chan struct{})
	go func() { defer close(announced); e.announce(actx, gctx.Done(), engines) }()
	defer func() { stopAnnouncing(); <-announced }()
	wait := pollAlone
	if len(engines) > 1 {
		wait = pollShared
	}
	for i, eng := range engines {
		g.Go(func() error { return e.pull(gctx, eng.Name, consumers[i], wait) })
	}
	err = g.Wait()

	// Soft stop: nothing new is pulled; give running runs the grace period.
	done := make(chan struct{})
	go func() { e.inflight.Wait(); close(done) }()
	if n := e.busyRuns(); n > 0 {
		e.log.Info("stopping: the runs in flight may finish within the grace period, then they are handed back", "runs", n, "grace", e.cfg.ShutdownGrace)
	}
	select {
	case <-done:
	case <-time.After(e.cfg.ShutdownGrace):
		e.log.Info("grace period over, handing back runs still in flight", "grace", e.cfg.ShutdownGrace)
		e.cancelHard(errShutdown)
		<-done
	}
	// The hand-backs (Nak) are sent without waiting for an answer: make
	// sure the server has them before the connection closes, or the runs
	// would wait out AckWait instead of going to another executor at once.
	if err := e.bus.JS.Conn().FlushTimeout(5 * time.Second); err != nil {
		e.log.Warn("cannot flush the last acknowledgements to NATS; runs handed back may wait out AckWait", "err", err)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// busyRuns is how many runs this executor holds now.
func (e *Executor) busyRuns() int {
	e.runningMu.Lock()
	defer e.runningMu.Unlock()
	return len(e.running)
}

// sweep removes the directories of finished runs until leftovers is
// closed. Removing a directory costs about as much as creating it; here it
// does not hold a slot.
func (e *Executor) sweep() {
	for dir := range e.leftovers {
		if err := os.RemoveAll(dir); err != nil {
			e.log.Warn("cannot remove a run directory", "dir", dir, "err", err)
		}
	}
}

// removeRunDir has the directory of a finished run removed.
func (e *Executor) removeRunDir(runID string) {
	dir := filepath.Join(e.cfg.WorkDir, runID)
	select {
	case e.leftovers <- dir:
	default: // the sweeper is behind: do it here
		if err := os.RemoveAll(dir); err != nil {
			e.log.Warn("cannot remove a run directory", "dir", dir, "err", err)
		}
	}
}

// How long one fetch waits for a run. A waiting fetch holds a slot (a run
// it brings must have one: none may wait in this process while another
// executor could run it), and a fetch is not withdrawn before it expires
// (the server would deliver to nobody, and the run would wait out
// AckWait). With one engine that costs nothing; with several, an idle
// engine's wait holds a slot that another engine's runs may need, so a
// wait lasts pollShared: a run then waits for a slot held by another
// engine's idle wait at most that long (it used to wait 5 s and more).
const (
	pollAlone  = 5 * time.Second
	pollShared = 500 * time.Millisecond
)

// pull fetches runs for the free slots: it holds one slot while it waits,
// up to wait, for a run, and once one arrives it takes the other free
// slots and asks, without waiting, for that many more.
func (e *Executor) pull(ctx context.Context, engine string, cons jetstream.Consumer, wait time.Duration) error {
	log := e.log.With("engine", engine)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e.slots <- struct{}{}:
		}
		// The deadline is the long-poll wait; canceling ctx ends it at once.
		fctx, cancel := context.WithTimeout(ctx, wait)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			e.releaseSlots(1)
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("fetch failed, retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		got, pending := e.start(batch)
		cancel()
		if got == 0 {
			e.releaseSlots(1)
			if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				log.Debug("fetch ended", "err", err)
			}
			continue
		}
		// More work is waiting: fill the other free slots in one request.
		// (When none is, as the delivery said, that request would come
		// back empty: a round trip per run at a few runs a second.)
		if pending == 0 {
			continue
		}
		if n := e.takeFreeSlots(); n > 0 {
			more, err := cons.FetchNoWait(n)
			got := 0
			if err == nil {
				got, _ = e.start(more)
			}
			e.releaseSlots(n - got)
		}
	}
}

// start runs each message of batch as it arrives, in a slot taken for it
// beforehand, and returns how many there were and whether more may wait
// (pending > 0): the consumer's count when the last one was delivered.
// That count is of runs never delivered, so a redelivery, such as the
// runs an executor handed back at shutdown or left when it died, counts
// as more waiting: its like are not counted.
func (e *Executor) start(batch jetstream.MessageBatch) (got int, pending uint64) {
	for msg := range batch.Messages() {
		got++
		if meta, err := msg.Metadata(); err == nil {
			pending = meta.NumPending
			if meta.NumDelivered > 1 {
				pending = max(pending, 1)
			}
		} else {
			pending = 1 // unknown: ask
		}
		e.inflight.Add(1)
		go func() {
			defer func() { <-e.slots; e.inflight.Done() }()
			e.handle(msg)
		}()
	}
	return got, pending
}

// takeFreeSlots takes every slot free now, without waiting, and returns
// how many it took.
func (e *Executor) takeFreeSlots() int {
	for n := 0; ; n++ {
		select {
		case e.slots <- struct{}{}:
		default:
			return n
		}
	}
}

func (e *Executor) releaseSlots(n int) {
	for range n {
		<-e.slots
	}
}

// announce keeps this executor and its engines listed in the registry until
// ctx ends, then removes the entry; once draining closes, the entry says
// the executor is draining.
func (e *Executor) announce(ctx context.Context, draining <-chan struct{}, engines []providers.Engine) {
	info := events.ExecutorInfo{ID: e.cfg.ID, Slots: e.cfg.Slots, StartedAt: time.Now().UTC()}
	info.Host, _ = os.Hostname()
	for _, eng := range engines {
		ei := events.EngineInfo{Name: eng.Name, Version: eng.Version, WorkflowTypes: eng.WorkflowTypes}
		for _, p := range eng.Parameters {
			ei.Parameters = append(ei.Parameters, events.EngineParameter{Name: p.Name, Type: p.Type, Default: p.Default, Values: p.Values})
		}
		info.Engines = append(info.Engines, ei)
	}
	t := time.NewTicker(e.cfg.RegistryInterval)
	defer t.Stop()
	for {
		if data, err := json.Marshal(info); err != nil {
			e.log.Error("cannot encode the executor's registry entry", "err", err)
		} else {
			putCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := e.bus.Executors.Put(putCtx, e.cfg.ID, data); err != nil && ctx.Err() == nil {
				e.log.Warn("cannot announce executor", "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			delCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = e.bus.Executors.Delete(delCtx, e.cfg.ID)
			cancel()
			return
		case <-draining:
			info.Draining, draining = true, nil
		case <-t.C:
		}
	}
}
