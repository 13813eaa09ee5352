package apiserver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
)

// relayEnv is an embedded NATS with the project's streams and a run store
// on PostgreSQL, for the relay to work between.
type relayEnv struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	names  events.Names
	store  *models.Store
	pub    *events.Publisher
	insert func(id string, payload []byte) models.OutboxMessage
}

func newRelayEnv(t *testing.T, ns string) *relayEnv {
	t.Helper()
	ctx := t.Context()
	bus, nc := eventstest.Bus(t, ns, events.Config{})
	js, names := bus.JS, bus.Names
	e := &relayEnv{nc: nc, js: js, names: names, store: modelstest.NewStore(t, modelstest.PostgresURL(t)), pub: events.NewPublisher(js, names)}
	e.insert = func(id string, payload []byte) models.OutboxMessage {
		run, _ := testRun(id, "https://example.com/wf.cwl")
		msg := &models.OutboxMessage{Subject: names.SubmitSubject("mock", id), MsgID: id, Payload: payload}
		require.NoError(t, e.store.CreateRuns(ctx, []*models.Run{run}, []*models.OutboxMessage{msg}))
		return *msg
	}
	return e
}

func TestRelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newRelayEnv(t, "RELAY")
	nc, js, names, store, pub, insert := e.nc, e.js, e.names, e.store, e.pub, e.insert

	// Left by an earlier process: the start-up sweep publishes it.
	insert("left-1", []byte(`{"n":1}`))
	// Too big for NATS (its max_payload lowered since the run was
	// accepted): it fails alone, and for good.
	insert("huge", []byte(strings.Repeat("x", int(nc.MaxPayload())+1)))

	relay := NewRelay(store, pub, time.Hour, nil)
	go func() { _ = relay.Run(ctx) }()
	for i := range 300 {
		relay.Deliver(insert(fmt.Sprintf("fresh-%d", i), []byte(`{}`)))
	}

	stream, err := js.Stream(ctx, names.RunsStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 301
	}, 10*time.Second, 20*time.Millisecond, "the left-over and every delivered message are published once")
	require.Eventually(t, func() bool {
		n, err := store.OutboxBacklog(ctx)
		return err == nil && n == 0
	}, 5*time.Second, 20*time.Millisecond, "published rows are deleted, and the one NATS refuses for good")
	// The refused run cannot be queued: it ends SYSTEM_ERROR, saying why.
	evs, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	last, err := evs.GetLastMsgForSubject(ctx, names.EventSubject("huge"))
	require.NoError(t, err, "no event ends the refused run")
	ev, err := events.DecodeRunEvent(last.Data)
	require.NoError(t, err)
	require.Equal(t, models.SystemError, ev.State)
	require.Contains(t, ev.SystemLog, "NATS refuses its queue message")

	// A second publish of the same rows (another replica's sweep) is
	// deduplicated by message id.
	relay.Kick()
	for _, err := range pub.PublishOutbox(ctx, []models.OutboxMessage{{Subject: names.SubmitSubject("mock", "fresh-3"), MsgID: "fresh-3", Payload: []byte(`{}`)}}) {
		require.NoError(t, err)
	}
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 301, info.State.Msgs)
}

// gatedDeletes holds every DeleteOutbox until the gate opens: a commit
// that takes long.
type gatedDeletes struct {
	*models.Store
	gate <-chan struct{}
}

func (g gatedDeletes) DeleteOutbox(ctx context.Context, seqs ...int64) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Store.DeleteOutbox(ctx, seqs...)
}

// ackedPublisher says when a publish call has its acks: the relay has then
// seen them, which the stream's state alone does not tell.
type ackedPublisher struct {
	Publisher
	acked chan<- struct{}
}

func (p ackedPublisher) PublishOutbox(ctx context.Context, msgs []models.OutboxMessage) []error {
	errs := p.Publisher.PublishOutbox(ctx, msgs)
	p.acked <- struct{}{}
	return errs
}

// A slow delete of published rows holds up no later publish (dispatch does
// not wait on the database), and shutdown waits for the deletes.
func TestRelayPublishesWhileDeletesWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newRelayEnv(t, "RELAYSLOW")
	gate := make(chan struct{})
	acked := make(chan struct{}, 16)
	relay := NewRelay(gatedDeletes{e.store, gate}, ackedPublisher{e.pub, acked}, time.Hour, nil)
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()

	stream, err := e.js.Stream(ctx, e.names.RunsStream())
	require.NoError(t, err)
	// One at a time: each is published while every earlier delete waits.
	for i := range 5 {
		relay.Deliver(e.insert(fmt.Sprintf("slow-%d", i), []byte(`{}`)))
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d was not published while the deletes before it wait", i)
		}
		info, err := stream.Info(ctx)
		require.NoError(t, err)
		require.EqualValues(t, i+1, info.State.Msgs)
	}
	n, err := e.store.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, n, "no row is deleted before its delete is let through")

	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with the deletes of published rows still waiting", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once the deletes went through")
	}
	n, err = e.store.OutboxBacklog(context.Background())
	require.NoError(t, err)
	require.Zero(t, n, "the rows published before shutdown are deleted")
}

// countedDeletes reports the rows of each DeleteOutbox once it is done,
// and each read of the outbox (a sweep).
type countedDeletes struct {
	*models.Store
	deletes chan<- []int64
	reads   chan<- struct{}
}

func (c countedDeletes) DeleteOutbox(ctx context.Context, seqs ...int64) error {
	err := c.Store.DeleteOutbox(ctx, seqs...)
	c.deletes <- seqs
	return err
}

func (c countedDeletes) PendingOutbox(ctx context.Context, limit int, before time.Time) ([]models.OutboxMessage, error) {
	msgs, err := c.Store.PendingOutbox(ctx, limit, before)
	select {
	case c.reads <- struct{}{}:
	default:
	}
	return msgs, err
}

// Rows published one by one, a few a second, are deleted together: one
// transaction for those that come within the linger, not one each.
func TestRelayDeletesPublishedRowsTogether(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newRelayEnv(t, "RELAYLINGER")
	deletes := make(chan []int64, 16)
	acked := make(chan struct{}, 16)
	reads := make(chan struct{}, 1)
	relay := NewRelay(countedDeletes{e.store, deletes, reads}, ackedPublisher{e.pub, acked}, time.Hour, nil)
	relay.deleteLinger = time.Second
	go func() { _ = relay.Run(ctx) }()
	// The sweep Run starts with must not find the rows below: it would
	// publish one twice.
	select {
	case <-reads:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not sweep the outbox when it started")
	}

	var want []int64
	for i := range 3 {
		msg := e.insert(fmt.Sprintf("linger-%d", i), []byte(`{}`))
		want = append(want, msg.Seq)
		relay.Deliver(msg)
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d was not published", i)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case seqs := <-deletes:
		require.Equal(t, want, seqs, "one delete for the three rows")
	case <-time.After(5 * time.Second):
		t.Fatal("the published rows were not deleted")
	}
	n, err := e.store.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

// A submission's row left behind after its run was delivered (the API died
// inside the delete's linger, or the delete failed) is dropped, not
// published again: past the stream's duplicate window that would be a
// first delivery of a run that has run already. A row whose run still
// waits is published.
func TestRelayDropsTheRowsOfDeliveredRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newRelayEnv(t, "RELAYDROP")
	e.insert("waiting", []byte(`{}`))
	for _, id := range []string{"ended", "retrying"} {
		e.insert(id, []byte(`{}`))
	}
	_, err := e.store.ProjectRuns(ctx, models.Checkpoint{Name: "test", From: 0, To: 1}, []models.RunUpdate{
		{ID: "ended", Fn: func(r *models.Run) ([]models.TaskLog, error) {
			r.State, r.Attempt = models.Complete, 1
			return nil, nil
		}},
		{ID: "retrying", Fn: func(r *models.Run) ([]models.TaskLog, error) {
			r.Attempt = 1 // handed back: QUEUED again, its message redelivered
			return nil, nil
		}},
	}, nil)
	require.NoError(t, err)

	relay := NewRelay(e.store, e.pub, time.Hour, nil)
	go func() { _ = relay.Run(ctx) }()
	require.Eventually(t, func() bool {
		n, err := e.store.OutboxBacklog(ctx)
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond)
	stream, err := e.js.Stream(ctx, e.names.RunsStream())
	require.NoError(t, err)
	_, err = stream.GetLastMsgForSubject(ctx, e.names.SubmitSubject("mock", "waiting"))
	require.NoError(t, err, "the waiting run is queued")
	for _, id := range []string{"ended", "retrying"} {
		_, err = stream.GetLastMsgForSubject(ctx, e.names.SubmitSubject("mock", id))
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "run %s was delivered already", id)
	}
}

// A message whose publish failed (its stream was gone for a moment) is
// published by the periodic sweep, with no kick (no reconnect happened to
// ask for one).
func TestRelaySweepsWhatAPublishLeft(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newRelayEnv(t, "RELAYSWEEP")
	relay := NewRelay(e.store, e.pub, 200*time.Millisecond, nil)
	go func() { _ = relay.Run(ctx) }()

	require.NoError(t, e.js.DeleteStream(ctx, e.names.RunsStream()))
	relay.Deliver(e.insert("left", []byte(`{}`)))
	time.Sleep(time.Second) // the publish fails: no stream
	n, err := e.store.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the failed message stays in the outbox")
	_, err = events.Provision(ctx, e.js, e.names, events.Config{})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		n, err := e.store.OutboxBacklog(ctx)
		return err == nil && n == 0
	}, 10*time.Second, 50*time.Millisecond, "the sweep did not publish it")
	stream, err := e.js.Stream(ctx, e.names.RunsStream())
	require.NoError(t, err)
	_, err = stream.GetLastMsgForSubject(ctx, e.names.SubmitSubject("mock", "left"))
	require.NoError(t, err)
}
