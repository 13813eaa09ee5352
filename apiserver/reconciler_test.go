package apiserver

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
)

// reconcilerBus starts an embedded NATS server with the streams and buckets
// of a namespace of its own.
func reconcilerBus(t *testing.T) (*events.Bus, *nats.Conn) {
	t.Helper()
	return eventstest.Bus(t, "RECON", events.Config{ExecutorTTL: time.Minute})
}

// A catalog that has not heard from an executor for a TTL (this process
// was paused, its watch stalled, NATS was unreachable) does not make the
// reconciler preempt that executor's runs while the registry still holds
// its entry; the runs of an executor whose entry is gone are repaired.
func TestReconcilerAsksTheRegistryBeforeRepairing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus, _ := reconcilerBus(t)
	store := modelstest.NewStore(t, filepath.Join(t.TempDir(), "wes.db"))
	for _, run := range [][2]string{{"run-alive", "alive"}, {"run-gone", "gone"}} {
		id, exec := run[0], run[1]
		require.NoError(t, store.CreateRuns(ctx, []*models.Run{{ID: id, State: models.Queued, Engine: "mock", CreatedAt: time.Now().UTC(),
			Request: models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "https://example.com/wf.cwl"}}}, nil))
		require.NoError(t, store.UpdateRun(ctx, id, func(r *models.Run) ([]models.TaskLog, error) {
			r.State, r.Attempt, r.Executor = models.Running, 1, exec
			return nil, nil
		}))
	}
	info, err := json.Marshal(events.ExecutorInfo{ID: "alive"})
	require.NoError(t, err)
	_, err = bus.Executors.Put(ctx, "alive", info)
	require.NoError(t, err)

	// The catalog last heard of both long ago.
	const ttl = 2 * time.Second
	catalog := NewCatalog(ttl)
	catalog.put(events.ExecutorInfo{ID: "alive"}, time.Now().Add(-time.Hour))
	catalog.put(events.ExecutorInfo{ID: "gone"}, time.Now().Add(-time.Hour))
	catalog.synced = time.Now().Add(-time.Hour)

	reg := prometheus.NewRegistry()
	rc := NewReconciler(store, catalog, bus, ReconcilerConfig{Holder: "test", Interval: time.Second}, reg, slog.New(slog.DiscardHandler))
	rc.page = 1 // the dead executor's run is on the second page
	require.NoError(t, rc.reconcile(ctx))

	var repaired []string
	for _, ev := range streamEvents(t, bus) {
		require.Equal(t, models.Preempted, ev.State)
		require.NotNil(t, ev.Workflow, "callbacks hear of it")
		require.Equal(t, "https://example.com/wf.cwl", ev.Workflow.URL)
		repaired = append(repaired, ev.RunID)
	}
	require.Equal(t, []string{"run-gone"}, repaired, "only the run of the executor the registry no longer holds")
	require.Equal(t, 1.0, repairsCounted(t, reg), "one repair counted")

	// The projector has not applied it yet: the next pass sends the same
	// event, which the stream drops, and counts nothing.
	require.NoError(t, rc.reconcile(ctx))
	require.Equal(t, 1.0, repairsCounted(t, reg), "a repeat is not a repair")
}

// repairsCounted sums wes_reconciler_repairs_total over its kinds.
func repairsCounted(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	repairs := 0.0
	for _, f := range families {
		if f.GetName() == "wes_reconciler_repairs_total" {
			for _, m := range f.GetMetric() {
				repairs += m.GetCounter().GetValue()
			}
		}
	}
	return repairs
}

// The reconciler waits, after (re)connecting to NATS, until every live
// executor has had a TTL to announce itself.
func TestReconcilerWaitsATTLAfterConnecting(t *testing.T) {
	t.Parallel()
	bus, nc := reconcilerBus(t)
	rc := NewReconciler(nil, NewCatalog(300*time.Millisecond), bus, ReconcilerConfig{Holder: "test", Interval: time.Second}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	require.Same(t, nc, rc.conn)
	require.False(t, rc.connectedForTTL(), "just connected")
	require.Eventually(t, rc.connectedForTTL, 5*time.Second, 50*time.Millisecond)
	rc.reconnects++ // as if the connection had been re-established since
	require.False(t, rc.connectedForTTL(), "just reconnected")
	require.Eventually(t, rc.connectedForTTL, 5*time.Second, 50*time.Millisecond)
}

// A catalog that is starting keeps a submission waiting for the
// registry's contents rather than refusing it for want of engines; a watch
// that ends unsettles the catalog until the next one has caught up.
func TestCatalogFirstSyncAndRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bus, _ := reconcilerBus(t)
	info, err := json.Marshal(events.ExecutorInfo{ID: "e1", Engines: []events.EngineInfo{cwltool}})
	require.NoError(t, err)
	_, err = bus.Executors.Put(ctx, "e1", info)
	require.NoError(t, err)

	c := NewCatalog(time.Minute)
	started := make(chan struct{})
	go func() {
		c.mu.Lock()
		c.following = true // as Run does first
		c.mu.Unlock()
		close(started)
		_ = c.Run(ctx, bus.Executors, slog.New(slog.DiscardHandler))
	}()
	<-started
	got, err := c.resolve("CWL", "v1.0", "", "")
	require.NoError(t, err, "a submission right after start-up waits for the registry")
	require.Equal(t, cwltool, got)
	require.True(t, c.live("e1"))

	c.mu.RLock()
	synced := c.synced
	c.mu.RUnlock()
	require.False(t, synced.IsZero())
	c.unsync() // what follow and Run do when a watch starts or ends
	require.False(t, c.settled())
}

// A catalog whose watch has heard nothing for longer than the TTL (its
// consumer went with a NATS node) asks the registry before it refuses a
// submission for want of engines.
func TestCatalogAsksTheRegistryBeforeRefusing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bus, _ := reconcilerBus(t)
	info, err := json.Marshal(events.ExecutorInfo{ID: "e1", Engines: []events.EngineInfo{cwltool}})
	require.NoError(t, err)
	_, err = bus.Executors.Put(ctx, "e1", info)
	require.NoError(t, err)
	c := NewCatalog(time.Minute)
	go func() { _ = c.Run(ctx, bus.Executors, slog.New(slog.DiscardHandler)) }()
	require.Eventually(t, func() bool { return c.live("e1") }, 5*time.Second, 10*time.Millisecond)

	later := time.Now().Add(time.Hour) // as if the watch had been silent for an hour
	c.mu.Lock()
	c.now = func() time.Time { return later }
	c.mu.Unlock()
	require.Empty(t, c.engines())
	got, err := c.resolve("CWL", "v1.0", "", "")
	require.NoError(t, err, "the registry still lists e1")
	require.Equal(t, cwltool, got)
}

// A watch that stays silent for a TTL while executors are listed is
// restarted, and what the new watch finds replaces the catalog: executors
// whose entries lapsed (crashed ones; a lapse leaves no delete) are gone.
func TestCatalogRestartsASilentWatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := events.StartEmbedded("127.0.0.1", 0, t.TempDir())
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names, err := events.NewNames("SILENT")
	require.NoError(t, err)
	bus, err := events.Provision(ctx, js, names, events.Config{ExecutorTTL: time.Second})
	require.NoError(t, err)
	info, err := json.Marshal(events.ExecutorInfo{ID: "crashed", Engines: []events.EngineInfo{cwltool}})
	require.NoError(t, err)
	_, err = bus.Executors.Put(ctx, "crashed", info)
	require.NoError(t, err)

	c := NewCatalog(time.Second)
	go func() { _ = c.Run(ctx, bus.Executors, slog.New(slog.DiscardHandler)) }()
	require.Eventually(t, func() bool { return c.live("crashed") }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return len(c.execs) == 0
	}, 10*time.Second, 50*time.Millisecond, "the lapsed executor is forgotten")
	require.Eventually(t, c.settled, 5*time.Second, 50*time.Millisecond, "a restart for silence keeps the catalog settled")
}

func TestReconcilerDue(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name           string
		since          time.Duration // 0: no pass yet
		tick, interval time.Duration
		want           bool
	}{
		{"first pass", 0, 10 * time.Second, time.Minute, true},
		{"a tick of a long interval", 10 * time.Second, 10 * time.Second, time.Minute, false},
		{"the interval is over", time.Minute, 10 * time.Second, time.Minute, true},
		{"a tick a little early", 59 * time.Second, 10 * time.Second, time.Minute, true},
		{"every tick when tick and interval agree", 999 * time.Millisecond, time.Second, time.Second, true},
		{"half a tick early is too early", 400 * time.Millisecond, time.Second, time.Second, false},
	} {
		last := time.Time{}
		if tc.since > 0 {
			last = now.Add(-tc.since)
		}
		require.Equal(t, tc.want, due(last, now, tc.tick, tc.interval), tc.name)
	}
}

// A run waiting for an executor whose message the queue no longer holds
// (JetStream lost it) is queued again, once; one whose message is queued,
// or still in the outbox, is left alone.
func TestReconcilerRequeuesARunTheQueueLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus, _ := reconcilerBus(t)
	store := modelstest.NewStore(t, filepath.Join(t.TempDir(), "wes.db"))
	pub := events.NewPublisher(bus.JS, bus.Names)
	submitted := func(id string) (string, string, []byte) {
		subject, msgID, data, err := pub.EncodeSubmitted(events.RunSubmitted{RunID: id, Engine: "mock"})
		require.NoError(t, err)
		return subject, msgID, data
	}
	for _, id := range []string{"run-lost", "run-queued", "run-in-outbox", "run-running"} {
		var outbox []*models.OutboxMessage
		if id == "run-in-outbox" {
			subject, msgID, data := submitted(id)
			outbox = append(outbox, &models.OutboxMessage{Subject: subject, MsgID: msgID, Payload: data})
		}
		require.NoError(t, store.CreateRuns(ctx, []*models.Run{{ID: id, State: models.Queued, Engine: "mock", CreatedAt: time.Now().UTC(),
			Request: models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "https://example.com/wf.cwl"}}}, outbox))
	}
	require.NoError(t, store.UpdateRun(ctx, "run-running", func(r *models.Run) ([]models.TaskLog, error) {
		r.State, r.Attempt, r.Executor = models.Running, 1, "exec"
		return nil, nil
	}))
	// run-preempted had two attempts: its next delivery is attempt 3.
	require.NoError(t, store.CreateRuns(ctx, []*models.Run{{ID: "run-preempted", State: models.Queued, Engine: "mock", CreatedAt: time.Now().UTC()}}, nil))
	require.NoError(t, store.UpdateRun(ctx, "run-preempted", func(r *models.Run) ([]models.TaskLog, error) {
		r.State, r.Attempt, r.Executor = models.Preempted, 2, "exec-gone"
		return nil, nil
	}))
	// run-ran's message is gone because an executor ran it to the end;
	// its events are not in the database yet.
	require.NoError(t, store.CreateRuns(ctx, []*models.Run{{ID: "run-ran", State: models.Queued, Engine: "mock", CreatedAt: time.Now().UTC()}}, nil))
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "run-ran", Attempt: 1, State: models.Initializing, Source: "exec"}))
	subject, msgID, data := submitted("run-queued")
	require.NoError(t, pub.Publish(ctx, subject, msgID, data))
	time.Sleep(20 * time.Millisecond)

	rc := NewReconciler(store, NewCatalog(time.Minute), bus, ReconcilerConfig{Holder: "test", Interval: time.Second, RequeueAfter: 10 * time.Millisecond},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	require.NoError(t, rc.requeueLost(ctx))
	stream, err := bus.JS.Stream(ctx, bus.Names.RunsStream())
	require.NoError(t, err)
	msg, err := stream.GetLastMsgForSubject(ctx, bus.Names.SubmitSubject("mock", "run-lost"))
	require.NoError(t, err, "the lost run is queued again")
	sub, err := events.DecodeRunSubmitted(msg.Data)
	require.NoError(t, err)
	require.Equal(t, "https://example.com/wf.cwl", sub.Request.WorkflowURL, "with its request")
	require.Zero(t, sub.PriorAttempts)
	msg, err = stream.GetLastMsgForSubject(ctx, bus.Names.SubmitSubject("mock", "run-preempted"))
	require.NoError(t, err, "the lost run is queued again")
	sub, err = events.DecodeRunSubmitted(msg.Data)
	require.NoError(t, err)
	require.Equal(t, 2, sub.PriorAttempts, "its attempts go on from its last")
	for _, id := range []string{"run-in-outbox", "run-running", "run-ran"} {
		_, err := stream.GetLastMsgForSubject(ctx, bus.Names.SubmitSubject("mock", id))
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, id)
	}

	// The next look finds its message: nothing more.
	rc.lastRequeue = time.Time{}
	require.NoError(t, rc.requeueLost(ctx))
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, info.State.Msgs, "run-queued's message and run-lost's and run-preempted's new ones")

	var noted []string
	for _, ev := range streamEvents(t, bus) {
		if ev.Source == events.SourceAPI {
			require.Contains(t, ev.SystemLog, "queued again")
			noted = append(noted, ev.RunID)
		}
	}
	require.ElementsMatch(t, []string{"run-lost", "run-preempted"}, noted)
}

// streamEvents returns the first events of the events stream (a few are
// enough here).
func streamEvents(t *testing.T, bus *events.Bus) []events.RunEvent {
	t.Helper()
	ctx := context.Background()
	cons, err := bus.JS.OrderedConsumer(ctx, bus.Names.EventsStream(), jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	require.NoError(t, err)
	var evs []events.RunEvent
	for m := range batch.Messages() {
		ev, err := events.DecodeRunEvent(m.Data())
		require.NoError(t, err)
		evs = append(evs, ev)
	}
	return evs
}

// afterStaleRuns runs hook once StaleRuns has answered: what happens to a run
// between the page read and its check (a backlog run picked up, run to the end,
// its events projected; the projector lags by milliseconds).
type afterStaleRuns struct {
	*models.Store
	hook func()
}

func (s afterStaleRuns) StaleRuns(ctx context.Context, before time.Time, after int64, limit int) ([]models.Run, error) {
	runs, err := s.Store.StaleRuns(ctx, before, after, limit)
	if s.hook != nil {
		s.hook()
	}
	return runs, err
}

// A run that a backlog's page names, but that was delivered, completed and
// projected before its check looked for its message, is not queued again:
// the row as it is now decides.
func TestRequeueSkipsARunThatEndedAfterThePageWasRead(t *testing.T) {
	ctx := context.Background()
	bus, _ := reconcilerBus(t)
	store := modelstest.NewStore(t, filepath.Join(t.TempDir(), "wes.db"))
	pub := events.NewPublisher(bus.JS, bus.Names)
	require.NoError(t, store.CreateRuns(ctx, []*models.Run{{ID: "run-done", State: models.Queued, Engine: "mock", CreatedAt: time.Now().UTC(),
		Request: models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "https://example.com/wf.cwl"}}}, nil))
	time.Sleep(20 * time.Millisecond)

	hook := func() {
		// An executor takes the run, completes it and acks its message (so
		// WES_RUNS no longer holds it); the projector applies the events.
		for _, st := range []models.State{models.Initializing, models.Running, models.Complete} {
			require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "run-done", Attempt: 1, State: st, Source: "exec"}))
		}
		s, err := bus.JS.Stream(ctx, bus.Names.EventsStream())
		require.NoError(t, err)
		last := s.CachedInfo().State.LastSeq
		_, err = store.ProjectRuns(ctx, models.Checkpoint{Name: bus.Names.EventsStream(), From: 0, To: last},
			[]models.RunUpdate{{ID: "run-done", Fn: func(r *models.Run) ([]models.TaskLog, error) {
				r.State, r.Attempt, r.Executor, r.LastEventSeq = models.Complete, 1, "exec", last
				return nil, nil
			}}}, nil)
		require.NoError(t, err)
	}
	reg := prometheus.NewRegistry()
	rc := NewReconciler(afterStaleRuns{store, hook}, NewCatalog(time.Minute), bus,
		ReconcilerConfig{Holder: "test", Interval: time.Second, RequeueAfter: 10 * time.Millisecond}, reg, slog.New(slog.DiscardHandler))
	require.NoError(t, rc.requeueLost(ctx))

	run, err := store.GetRun(ctx, "run-done")
	require.NoError(t, err)
	require.Equal(t, models.Complete, run.State)
	stream, err := bus.JS.Stream(ctx, bus.Names.RunsStream())
	require.NoError(t, err)
	_, err = stream.GetLastMsgForSubject(ctx, bus.Names.SubmitSubject("mock", "run-done"))
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "a COMPLETE run was queued again")
	require.Zero(t, repairsCounted(t, reg))
}

// A run's message still in the queue at or below its consumer's ack floor
// will never be delivered (NATS 2.9 lost track of it): it is deleted and
// the run queued anew. Two replicas that queue one run again at once queue
// it once (the new message's id is the run's and its last event's).
func TestRequeueReplacesAStaleMessageOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus, _ := reconcilerBus(t)
	store := modelstest.NewStore(t, filepath.Join(t.TempDir(), "wes.db"))
	pub := events.NewPublisher(bus.JS, bus.Names)
	require.NoError(t, store.CreateRuns(ctx, []*models.Run{{ID: "run-stale", State: models.Queued, Engine: "mock", CreatedAt: time.Now().UTC(),
		Request: models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "https://example.com/wf.cwl"}}}, nil))
	subject, msgID, data, err := pub.EncodeSubmitted(events.RunSubmitted{RunID: "run-stale", Engine: "mock"})
	require.NoError(t, err)
	require.NoError(t, pub.Publish(ctx, subject, msgID, data))
	stream, err := bus.JS.Stream(ctx, bus.Names.RunsStream())
	require.NoError(t, err)
	old, err := stream.GetLastMsgForSubject(ctx, subject)
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)

	rc := NewReconciler(store, NewCatalog(time.Minute), bus, ReconcilerConfig{Holder: "test", Interval: time.Second, RequeueAfter: 10 * time.Millisecond},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	run, err := store.GetRun(ctx, "run-stale")
	require.NoError(t, err)
	q := requeuePass{rc: rc, floors: map[string]uint64{"mock": old.Sequence}} // the consumer acknowledged past it
	require.NoError(t, q.check(ctx, *run))

	_, err = stream.GetMsg(ctx, old.Sequence)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "the stale message is deleted")
	now, err := stream.GetLastMsgForSubject(ctx, subject)
	require.NoError(t, err, "and the run queued anew")
	require.Greater(t, now.Sequence, old.Sequence)

	// Another replica queues the same run again at the same time.
	require.NoError(t, rc.requeue(ctx, stream, *run, 0))
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Subjects[subject], "one message for the run")
}
