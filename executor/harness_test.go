package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// envNATSURL points the tests at a NATS JetStream server; without it they
// start an embedded one.
const envNATSURL = "WES_TEST_NATS_URL"

// testEngine is the engine of testProvider.
const testEngine = "test"

// fixture is a namespace of its own on a NATS server.
type fixture struct {
	ctx   context.Context
	nc    *nats.Conn
	js    jetstream.JetStream
	names events.Names
	bus   *events.Bus
	pub   *events.Publisher
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	url := os.Getenv(envNATSURL)
	if url == "" {
		t.Logf("!!! %s is not set: this test runs on an embedded NATS server", envNATSURL)
		srv, err := events.StartEmbedded("127.0.0.1", 0, t.TempDir())
		require.NoError(t, err)
		t.Cleanup(srv.Shutdown)
		url = srv.URL()
	}
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names, err := events.NewNames("T" + randomHex(t, 5))
	require.NoError(t, err)
	f := &fixture{ctx: ctx, nc: nc, js: js, names: names}
	f.provision(t)
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []string{names.RunsStream(), names.EventsStream(), names.DeadLetterStream(),
			"KV_" + names.CancelBucket(), "KV_" + names.ExecutorsBucket(), "KV_" + names.LeasesBucket(), "OBJ_" + names.ObjectsBucket()} {
			_ = js.DeleteStream(dctx, s)
		}
	})
	return f
}

// provision creates (again) the namespace's streams and buckets.
func (f *fixture) provision(t *testing.T) {
	t.Helper()
	bus, err := events.Provision(f.ctx, f.js, f.names, events.Config{})
	require.NoError(t, err)
	f.bus, f.pub = bus, events.NewPublisher(f.js, f.names)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// tWriter sends log lines to the test's log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs an executor of p until the test ends.
func (f *fixture) start(t *testing.T, cfg Config, p providers.Provider) *Executor {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "executor-" + randomHex(t, 3)
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ex := New(cfg, f.bus, p, prometheus.NewRegistry(), log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(2 * time.Minute):
			t.Error("the executor did not stop")
		}
	})
	return ex
}

// submit queues a run for the test engine and returns its id.
func (f *fixture) submit(t *testing.T) string {
	t.Helper()
	return f.submitID(t, randomHex(t, 8))
}

// submitID queues run runID for the test engine.
func (f *fixture) submitID(t *testing.T, runID string) string {
	t.Helper()
	subject, msgID, data, err := f.pub.EncodeSubmitted(events.RunSubmitted{
		RunID: runID, Engine: testEngine, SubmittedAt: time.Now().UTC(),
		Request: models.RunRequest{WorkflowURL: "https://example.org/workflow.cwl", WorkflowType: "CWL", WorkflowTypeVersion: "v1.2"},
	})
	require.NoError(t, err)
	require.NoError(t, f.pub.Publish(f.ctx, subject, msgID, data))
	return runID
}

// runEvents returns the events of run runID stored so far, oldest first.
func (f *fixture) runEvents(t *testing.T, runID string) []events.RunEvent {
	t.Helper()
	cons, err := f.js.CreateConsumer(f.ctx, f.names.EventsStream(), jetstream.ConsumerConfig{
		FilterSubject: f.names.EventSubject(runID), AckPolicy: jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if err != nil {
		t.Logf("cannot read the events of run %s: %v", runID, err) // the stream may be gone for a while, on purpose
		return nil
	}
	defer func() { _ = f.js.DeleteConsumer(f.ctx, f.names.EventsStream(), cons.CachedInfo().Name) }()
	var out []events.RunEvent
	for pending := int(cons.CachedInfo().NumPending); len(out) < pending; {
		batch, err := cons.Fetch(pending-len(out), jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		got := 0
		for msg := range batch.Messages() {
			got++
			ev, err := events.DecodeRunEvent(msg.Data())
			require.NoError(t, err)
			out = append(out, ev)
		}
		require.Positive(t, got, "events went missing")
	}
	return out
}

// waitState waits for an event of runID in state and returns it.
func (f *fixture) waitState(t *testing.T, runID string, state models.State, within time.Duration) events.RunEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		seen := f.runEvents(t, runID)
		for _, ev := range seen {
			if ev.State == state {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for run %s within %s; events:%s", state, runID, within, describe(seen))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func describe(evs []events.RunEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  attempt %d %s: %s %s", ev.Attempt, ev.State, truncate(ev.SystemLog, 300), truncate(ev.Error, 300))
	}
	return b.String()
}

// runsLeft is how many runs wait in the runs stream (a settled run leaves
// it: the stream is a work queue).
func (f *fixture) runsLeft(t *testing.T) uint64 {
	t.Helper()
	s, err := f.js.Stream(f.ctx, f.names.RunsStream())
	require.NoError(t, err)
	info, err := s.Info(f.ctx)
	require.NoError(t, err)
	return info.State.Msgs
}

// testProvider runs jobs with its run function and counts them.
type testProvider struct {
	calls atomic.Int32
	run   func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error)
}

func (p *testProvider) Engines(context.Context) ([]providers.Engine, error) {
	return []providers.Engine{{Name: testEngine, Version: "1.0", WorkflowTypes: map[string][]string{"CWL": {"v1.2"}}}}, nil
}

func (p *testProvider) Run(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
	p.calls.Add(1)
	return p.run(ctx, job, r)
}
