package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
	"github.com/wes-dev/wes/projector"
)

// embeddedBus starts a NATS server for the test and provisions namespace
// ns on it.
func embeddedBus(t *testing.T, ns string) (jetstream.JetStream, events.Names, *events.Bus) {
	t.Helper()
	bus, _ := eventstest.Bus(t, ns, events.Config{})
	return bus.JS, bus.Names, bus
}

// queuedRun stores a QUEUED run with that id.
func queuedRun(t *testing.T, store *models.Store, id string) {
	t.Helper()
	now := time.Now().UTC()
	require.NoError(t, store.CreateRun(context.Background(), &models.Run{ID: id, State: models.Queued, Engine: "mock", CreatedAt: now, UpdatedAt: now,
		Request: models.RunRequest{WorkflowType: "CWL", WorkflowTypeVersion: "v1.0", WorkflowURL: "wf.cwl"}}))
}

// projectUntil runs a projector until run id is in state want, and
// returns its metrics.
func projectUntil(t *testing.T, store *models.Store, bus *events.Bus, id string, want models.State) *prometheus.Registry {
	t.Helper()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = projector.New(store, bus, "test", reg, nil).Run(pctx)
	}()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool {
		r, err := store.GetRun(ctx, id)
		return err == nil && r.State == want
	}, 20*time.Second, 20*time.Millisecond, "run %s never %s", id, want)
	return reg
}

// An event the database refuses (an exit code beyond INTEGER) is
// dead-lettered alone; the events around it, in the same batch, are applied.
func TestProjectorSetsAsideWhatTheDatabaseRefuses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, names, bus := embeddedBus(t, "PROJ")
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	for _, id := range []string{"a", "b"} {
		queuedRun(t, store, id)
	}
	// Published before the projector starts, so that they form one batch.
	pub := events.NewPublisher(js, names)
	huge := 1 << 40
	for _, ev := range []events.RunEvent{
		{RunID: "a", Attempt: 1, State: models.Initializing, Source: "x"},
		{RunID: "b", Attempt: 1, State: models.Initializing, Source: "x"},
		{RunID: "a", Attempt: 1, State: models.Running, Source: "x", ExitCode: &huge},
		{RunID: "b", Attempt: 1, State: models.Running, Source: "x"},
		{RunID: "b", Attempt: 1, State: models.Complete, Source: "x"},
	} {
		require.NoError(t, pub.PublishEvent(ctx, ev))
	}
	go func() { _ = projector.New(store, bus, "test", prometheus.NewRegistry(), nil).Run(ctx) }()

	require.Eventually(t, func() bool {
		b, err := store.GetRun(ctx, "b")
		return err == nil && b.State == models.Complete
	}, 20*time.Second, 50*time.Millisecond)
	a, err := store.GetRun(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, models.Initializing, a.State, "the refused event is not applied; the one before it is")

	dl, err := js.Stream(ctx, names.DeadLetterStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(ctx)
		return err == nil && info.State.Msgs == 1
	}, 5*time.Second, 50*time.Millisecond, "the refused event is dead-lettered, once")
}

// A projector resumes exactly after the last event applied: a new one
// neither rereads what the last one applied nor misses what came after.
func TestProjectorResumesFromItsCheckpoint(t *testing.T) {
	ctx := context.Background()
	js, names, bus := embeddedBus(t, "RESUME")
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	queuedRun(t, store, "r")
	pub := events.NewPublisher(js, names)

	project := func(want models.State) *prometheus.Registry { return projectUntil(t, store, bus, "r", want) }
	counts := func(reg *prometheus.Registry) map[string]float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() == "wes_projector_events_total" {
				for _, m := range mf.GetMetric() {
					out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		return out
	}

	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Initializing, Source: "x"}))
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Running, Source: "x", Cmd: []string{"mock"}}))
	require.Equal(t, map[string]float64{"applied": 2}, counts(project(models.Running)))

	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Complete, Source: "x"}))
	require.Equal(t, map[string]float64{"applied": 1}, counts(project(models.Complete)), "the second projector starts after the first one's last event")
	pos, err := store.Checkpoint(ctx, names.EventsStream())
	require.NoError(t, err)
	require.Equal(t, uint64(3), pos)
	r, err := store.GetRun(ctx, "r")
	require.NoError(t, err)
	require.Equal(t, []string{"mock"}, r.Cmd)
	require.NotNil(t, r.StartTime)
}

// A projector of the durable-consumer era leaves its consumer behind: the
// first projector with a checkpoint starts from that consumer's ack floor,
// not from the stream's start, and deletes it.
func TestProjectorTakesOverTheLegacyConsumer(t *testing.T) {
	ctx := context.Background()
	js, names, bus := embeddedBus(t, "LEGACY")
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	queuedRun(t, store, "r")
	pub := events.NewPublisher(js, names)
	for _, st := range []models.State{models.Initializing, models.Running, models.Complete} {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: st, Source: "x"}))
	}
	// The old projector applied and acknowledged the first two events.
	legacy, err := js.CreateOrUpdateConsumer(ctx, names.EventsStream(), jetstream.ConsumerConfig{
		Durable: names.ProjectorConsumer(), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	batch, err := legacy.Fetch(2)
	require.NoError(t, err)
	for m := range batch.Messages() {
		require.NoError(t, m.DoubleAck(ctx))
	}
	require.NoError(t, store.UpdateRun(ctx, "r", func(r *models.Run) ([]models.TaskLog, error) {
		r.State, r.Attempt, r.LastEventSeq = models.Running, 1, 2
		return nil, nil
	}))

	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	reg := prometheus.NewRegistry()
	go func() {
		defer close(done)
		_ = projector.New(store, bus, "test", reg, nil).Run(pctx)
	}()
	require.Eventually(t, func() bool {
		r, err := store.GetRun(ctx, "r")
		return err == nil && r.State == models.Complete
	}, 20*time.Second, 20*time.Millisecond)
	cancel()
	<-done
	mfs, err := reg.Gather()
	require.NoError(t, err)
	seen := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "wes_projector_events_total" {
			for _, m := range mf.GetMetric() {
				seen[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, map[string]float64{"applied": 1}, seen, "only the event after the ack floor is read")
	_, err = js.Consumer(ctx, names.EventsStream(), names.ProjectorConsumer())
	require.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
}

// A short run's events, which come milliseconds apart, are applied in one
// transaction: the batch waits for them.
func TestProjectorBatchesEventsThatComeTogether(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, names, bus := embeddedBus(t, "LINGER")
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	queuedRun(t, store, "r")
	pub := events.NewPublisher(js, names)
	reg := prometheus.NewRegistry()
	p := projector.New(store, bus, "test", reg, nil)
	projector.SetLinger(p, time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	defer func() { cancel(); <-done }()

	for _, state := range []models.State{models.Initializing, models.Running, models.Complete} {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: state, Source: "x"}))
		time.Sleep(50 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		r, err := store.GetRun(ctx, "r")
		return err == nil && r.State == models.Complete
	}, 20*time.Second, 20*time.Millisecond)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var batches uint64
	for _, mf := range mfs {
		if mf.GetName() == "wes_projector_batch_events" {
			batches = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	require.EqualValues(t, 1, batches, "one transaction for the run's three events")
}

// TestProjectorReadsARecreatedStream: the events stream is deleted and
// created again (an operator's recovery). Its events' sequence numbers
// start again from 1, below the positions runs have recorded; they must
// still be applied.
func TestProjectorReadsARecreatedStream(t *testing.T) {
	ctx := context.Background()
	js, names, bus := embeddedBus(t, "RECREATE")
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	queuedRun(t, store, "other")
	queuedRun(t, store, "r")
	pub := events.NewPublisher(js, names)
	project := func(id string, want models.State) { projectUntil(t, store, bus, id, want) }
	for _, st := range []models.State{models.Initializing, models.Running, models.Complete} {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "other", Attempt: 1, State: st, Source: "x"}))
	}
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Initializing, Source: "x"}))
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Running, Source: "x"}))
	project("r", models.Running)

	require.NoError(t, js.DeleteStream(ctx, names.EventsStream()))
	bus, err := events.Provision(ctx, js, names, events.Config{})
	require.NoError(t, err)
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Complete, Source: "x"}))
	project("r", models.Complete)
	r, err := store.GetRun(ctx, "other")
	require.NoError(t, err)
	require.Equal(t, models.Complete, r.State, "a final state stays")
}

// The events stream deleted and made again under a running projector: the
// projector starts again from the new stream's first event (its ordered
// consumer would have gone on at the old position, past them).
func TestProjectorFollowsAStreamRecreatedUnderIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, names, bus := embeddedBus(t, "LIVE")
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	queuedRun(t, store, "other")
	queuedRun(t, store, "r")
	pub := events.NewPublisher(js, names)
	for _, st := range []models.State{models.Initializing, models.Running, models.Complete} {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "other", Attempt: 1, State: st, Source: "x"}))
	}
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Initializing, Source: "x"}))
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Running, Source: "x"}))

	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = projector.New(store, bus, "test", prometheus.NewRegistry(), nil).Run(pctx)
	}()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool { r, err := store.GetRun(ctx, "r"); return err == nil && r.State == models.Running }, 20*time.Second, 20*time.Millisecond)

	require.NoError(t, js.DeleteStream(ctx, names.EventsStream()))
	_, err := events.Provision(ctx, js, names, events.Config{})
	require.NoError(t, err)
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "r", Attempt: 1, State: models.Complete, Source: "x"}))
	// More events than the old stream's position before the projector
	// looks again: the new stream is read from its start all the same.
	for i := range 6 {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "other", Attempt: i + 2, State: models.Running, Source: fmt.Sprint("pad", i)}))
	}
	require.Eventually(t, func() bool { r, err := store.GetRun(ctx, "r"); return err == nil && r.State == models.Complete }, 30*time.Second, 100*time.Millisecond,
		"the COMPLETE event (seq 1 of the new stream) is never applied")
}
