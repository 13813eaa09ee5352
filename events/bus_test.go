package events_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

func TestStartEmbeddedRefusesReservedPort(t *testing.T) {
	t.Parallel()
	e, err := events.StartEmbedded("127.0.0.1", events.ReservedPort, t.TempDir())
	if e != nil {
		e.Shutdown()
	}
	require.Error(t, err)
	require.Nil(t, e)
	require.Contains(t, err.Error(), "4222")
	require.Equal(t, 4222, events.ReservedPort)
}

type busFixture struct {
	ctx   context.Context
	nc    *nats.Conn
	js    jetstream.JetStream
	names events.Names
	bus   *events.Bus
}

// setup starts an embedded NATS server on a free port, connects to it and
// provisions namespace "Test" on it.
func setup(t *testing.T) busFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)

	srv, err := events.StartEmbedded("127.0.0.1", 0, t.TempDir())
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	require.True(t, strings.HasPrefix(srv.URL(), "nats://127.0.0.1:"), srv.URL())
	require.False(t, strings.HasSuffix(srv.URL(), ":4222"), srv.URL())

	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	names, err := events.NewNames("Test")
	require.NoError(t, err)
	bus, err := events.Provision(ctx, js, names, events.Config{})
	require.NoError(t, err)
	return busFixture{ctx: ctx, nc: nc, js: js, names: names, bus: bus}
}

func TestProvisionIsIdempotent(t *testing.T) {
	t.Parallel()
	f := setup(t)

	// Every process provisions at start-up: a second call must succeed and
	// keep what the first made.
	bus, err := events.Provision(f.ctx, f.js, f.names, events.Config{})
	require.NoError(t, err)
	require.NotNil(t, bus.Cancel)
	require.NotNil(t, bus.Executors)
	require.NotNil(t, bus.Objects)
	require.Equal(t, f.names, bus.Names)

	runs, err := f.js.Stream(f.ctx, f.names.RunsStream())
	require.NoError(t, err)
	info, err := runs.Info(f.ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"test.runs.submitted.>"}, info.Config.Subjects)
	require.Equal(t, jetstream.WorkQueuePolicy, info.Config.Retention)
	require.Equal(t, time.Hour, info.Config.Duplicates)

	evs, err := f.js.Stream(f.ctx, f.names.EventsStream())
	require.NoError(t, err)
	info, err = evs.Info(f.ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"test.events.>"}, info.Config.Subjects)
	require.Equal(t, jetstream.LimitsPolicy, info.Config.Retention)

	for _, bucket := range []string{f.names.CancelBucket(), f.names.ExecutorsBucket()} {
		_, err := f.js.KeyValue(f.ctx, bucket)
		require.NoError(t, err, bucket)
	}
	_, err = f.js.ObjectStore(f.ctx, f.names.ObjectsBucket())
	require.NoError(t, err)
}

// Only the owner's settings are applied: a process started with others
// (an executor without WES_EVENT_RETENTION) leaves the streams and buckets
// as they are.
func TestProvisionAppliesTheOwnersSettings(t *testing.T) {
	t.Parallel()
	f := setup(t)
	maxAge := func() time.Duration {
		t.Helper()
		s, err := f.js.Stream(f.ctx, f.names.EventsStream())
		require.NoError(t, err)
		info, err := s.Info(f.ctx)
		require.NoError(t, err)
		return info.Config.MaxAge
	}
	ttl := func() time.Duration {
		t.Helper()
		kv, err := f.js.KeyValue(f.ctx, f.names.ExecutorsBucket())
		require.NoError(t, err)
		st, err := kv.Status(f.ctx)
		require.NoError(t, err)
		return st.TTL()
	}
	objectTTL := func() time.Duration {
		t.Helper()
		obs, err := f.js.ObjectStore(f.ctx, f.names.ObjectsBucket())
		require.NoError(t, err)
		st, err := obs.Status(f.ctx)
		require.NoError(t, err)
		return st.TTL()
	}
	_, err := events.Provision(f.ctx, f.js, f.names, events.Config{Owner: true, EventRetention: time.Hour, ExecutorTTL: 10 * time.Second, ObjectRetention: 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, time.Hour, maxAge())
	require.Equal(t, 10*time.Second, ttl())
	require.Equal(t, 24*time.Hour, objectTTL())

	_, err = events.Provision(f.ctx, f.js, f.names, events.Config{EventRetention: 720 * time.Hour, ExecutorTTL: time.Minute})
	require.NoError(t, err)
	require.Equal(t, time.Hour, maxAge(), "another process's retention is not applied")
	require.Equal(t, 10*time.Second, ttl())
	require.Equal(t, 24*time.Hour, objectTTL())

	_, err = events.Provision(f.ctx, f.js, f.names, events.Config{Owner: true, EventRetention: 2 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, maxAge(), "the owner's is")
	require.Zero(t, objectTTL(), "the owner's: objects kept for ever")
}

// A publish whose ack never comes (its server died after it got the
// message) gives up after PublishTryTimeout, not at the caller's deadline,
// so that the caller can send it again.
func TestAPublishWithoutAckGivesUpInTime(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// A subscriber that never answers stands for the server that died:
	// the publish is neither refused (no responders) nor acknowledged.
	subject := "silent." + f.names.EventsStream() // no stream's
	sub, err := f.nc.SubscribeSync(subject)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, f.nc.Flush())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = events.NewPublisher(f.js, f.names).Publish(ctx, subject, "id-1", []byte("{}"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), events.PublishTryTimeout+3*time.Second)
	require.NoError(t, ctx.Err(), "the caller's deadline is left for retries")
}

func TestPublisherDeduplicates(t *testing.T) {
	t.Parallel()
	f := setup(t)
	pub := events.NewPublisher(f.js, f.names)

	count := func() uint64 {
		t.Helper()
		s, err := f.js.Stream(f.ctx, f.names.EventsStream())
		require.NoError(t, err)
		info, err := s.Info(f.ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}

	// The same fact twice: the second carries another time (EncodeEvent
	// stamps it) but the same Nats-Msg-Id, so it is stored once.
	ev := events.RunEvent{RunID: "r1", Attempt: 1, State: models.Running, Source: "ex-1"}
	require.NoError(t, pub.PublishEvent(f.ctx, ev))
	time.Sleep(2 * time.Millisecond)
	require.NoError(t, pub.PublishEvent(f.ctx, ev))
	require.Equal(t, uint64(1), count())

	// Another fact is stored.
	ev.State = models.Complete
	require.NoError(t, pub.PublishEvent(f.ctx, ev))
	require.Equal(t, uint64(2), count())

	// What was stored decodes back into the first event.
	s, err := f.js.Stream(f.ctx, f.names.EventsStream())
	require.NoError(t, err)
	raw, err := s.GetMsg(f.ctx, 1)
	require.NoError(t, err)
	require.Equal(t, f.names.EventSubject("r1"), raw.Subject)
	got, err := events.DecodeRunEvent(raw.Data)
	require.NoError(t, err)
	require.Equal(t, models.Running, got.State)
	require.Equal(t, "r1.1.RUNNING", raw.Header.Get(jetstream.MsgIDHeader))
}

func TestQueueCollectorReportsPending(t *testing.T) {
	t.Parallel()
	f := setup(t)
	pub := events.NewPublisher(f.js, f.names)

	// The executors' consumer of engine "mock" and one the collector must
	// leave out.
	_, err := f.js.CreateOrUpdateConsumer(f.ctx, f.names.RunsStream(), jetstream.ConsumerConfig{
		Durable: f.names.ExecutorConsumer("mock"), FilterSubject: f.names.SubmitFilter("mock"),
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	_, err = f.js.CreateOrUpdateConsumer(f.ctx, f.names.EventsStream(), jetstream.ConsumerConfig{
		Durable: "somebody_else", AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)

	for _, id := range []string{"r1", "r2", "r3"} {
		subject, msgID, data, err := pub.EncodeSubmitted(events.RunSubmitted{RunID: id, Engine: "mock"})
		require.NoError(t, err)
		require.NoError(t, pub.Publish(f.ctx, subject, msgID, data))
	}
	require.NoError(t, pub.PublishEvent(f.ctx, events.RunEvent{RunID: "r1", Attempt: 1, State: models.Queued}))

	c := events.NewQueueCollector(f.bus)
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	// The consumer's pending count follows the stream a moment later.
	var found map[string]float64
	require.Eventually(t, func() bool {
		families, err := reg.Gather()
		require.NoError(t, err)
		found = map[string]float64{}
		for _, mf := range families {
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				require.NotEqual(t, "somebody_else", labels["consumer"])
				found[mf.GetName()+"/"+labels["stream"]+"/"+labels["consumer"]] = m.GetGauge().GetValue()
			}
		}
		return found["wes_queue_pending/TEST_RUNS/executor_mock"] == 3
	}, 5*time.Second, 20*time.Millisecond, "pending never reached 3")
	pendingSeries := 0
	for k := range found {
		if strings.HasPrefix(k, "wes_queue_pending/") {
			pendingSeries++
		}
	}
	require.Equal(t, 1, pendingSeries, "series: %v", found)
	key := "/TEST_RUNS/executor_mock"
	require.Contains(t, found, "wes_queue_pending"+key)
	require.Equal(t, 3.0, found["wes_queue_pending"+key])
	require.Equal(t, 0.0, found["wes_queue_ack_pending"+key])
	require.Equal(t, 0.0, found["wes_queue_redelivered"+key])
}

// WatchStates reports the run id and state of every state change, in
// order, and skips task-only events and payloads it cannot read.
func TestWatchStates(t *testing.T) {
	t.Parallel()
	f := setup(t)
	pub := events.NewPublisher(f.js, f.names)
	got := make(chan events.StateChange, 10)
	sub, err := events.WatchStates(f.nc, f.names, func(c events.StateChange) { got <- c })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, f.nc.Flush())

	code := 0
	require.NoError(t, pub.PublishEvent(f.ctx, events.RunEvent{RunID: "r1", Attempt: 1, State: models.Initializing, Source: "ex-1",
		Workflow: &events.WorkflowRef{URL: "wf.cwl", Tags: map[string]string{"a": "b"}}}))
	require.NoError(t, pub.PublishEvent(f.ctx, events.RunEvent{RunID: "r1", Attempt: 1, Source: "ex-1",
		Tasks: []models.TaskLog{{ID: "t1"}}}))
	require.NoError(t, f.nc.Publish(f.names.EventSubject("r2"), []byte(`{"run_id":`)))
	require.NoError(t, f.nc.Publish(f.names.EventSubject("r3"), []byte(`{"v":1,"state":"RUNNING"}`)))
	require.NoError(t, f.nc.Publish(f.names.EventSubject("r4"), []byte(`{"v":1,"run_id":"r4","state":7}`)))
	require.NoError(t, pub.PublishEvent(f.ctx, events.RunEvent{RunID: "r1", Attempt: 1, State: models.Complete, Source: "ex-1",
		ExitCode: &code, Outputs: []byte(`{"o":1}`), Tasks: []models.TaskLog{{ID: "t2"}}}))

	for _, want := range []events.StateChange{{RunID: "r1", State: models.Initializing}, {RunID: "r1", State: models.Complete}} {
		select {
		case c := <-got:
			require.Equal(t, want, c)
		case <-time.After(5 * time.Second):
			t.Fatalf("no state change %v", want)
		}
	}
	require.NoError(t, f.nc.Flush())
	select {
	case c := <-got:
		t.Fatalf("unexpected state change %v", c)
	case <-time.After(100 * time.Millisecond):
	}
}
