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
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/models/modelstest"
)

func TestRelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := events.StartEmbedded("127.0.0.1", 0, t.TempDir())
	require.NoError(t, err)
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names, err := events.NewNames("RELAY")
	require.NoError(t, err)
	_, err = events.Provision(ctx, js, names, events.Config{})
	require.NoError(t, err)
	store := modelstest.NewStore(t, modelstest.PostgresURL(t))
	pub := events.NewPublisher(js, names)

	insert := func(id string, payload []byte) models.OutboxMessage {
		run, _ := testRun(id, "https://example.com/wf.cwl")
		msg := &models.OutboxMessage{Subject: names.SubmitSubject("mock"), MsgID: id, Payload: payload}
		require.NoError(t, store.CreateRuns(ctx, []*models.Run{run}, []*models.OutboxMessage{msg}))
		return *msg
	}
	// Left by an earlier process: the start-up sweep publishes it.
	insert("left-1", []byte(`{"n":1}`))
	// Too big for NATS: it fails alone and stays in the outbox.
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
		return err == nil && n == 1
	}, 5*time.Second, 20*time.Millisecond, "published rows are deleted; the one NATS refused stays")

	// A second publish of the same rows (another replica's sweep) is
	// deduplicated by message id.
	relay.Kick()
	msgs, err := store.PendingOutbox(ctx, 10, time.Now().Add(time.Second))
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "huge", msgs[0].MsgID)
	for _, err := range pub.PublishOutbox(ctx, []models.OutboxMessage{{Subject: names.SubmitSubject("mock"), MsgID: "fresh-3", Payload: []byte(`{}`)}}) {
		require.NoError(t, err)
	}
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 301, info.State.Msgs)
}
