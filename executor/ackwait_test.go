package executor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// TestExecutorsOfAnEngineShareTheAckWait: an executor whose AckWait differs
// from the one its engine's live executors use refuses to start, and leaves
// the consumer's wait as it was; once none of them runs, a new executor may
// change the wait.
func TestExecutorsOfAnEngineShareTheAckWait(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{ExitCode: 0}, nil
	}}
	log := slog.New(slog.NewTextHandler(tWriter{t}, nil))
	// launch runs an executor until the returned stop is called.
	launch := func(id string, wait time.Duration) (stop func() error) {
		ex := New(Config{ID: id, AckWait: wait, WorkDir: t.TempDir()}, f.bus, p, prometheus.NewRegistry(), log)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ex.Run(ctx) }()
		t.Cleanup(cancel)
		return func() error {
			cancel()
			select {
			case err := <-done:
				return err
			case <-time.After(time.Minute):
				return context.DeadlineExceeded
			}
		}
	}
	consumerWait := func() time.Duration {
		cons, err := f.js.Consumer(f.ctx, f.names.RunsStream(), f.names.ExecutorConsumer(testEngine))
		require.NoError(t, err)
		return cons.CachedInfo().Config.AckWait
	}
	listed := func(id string) bool {
		_, err := f.bus.Executors.Get(f.ctx, id)
		return err == nil
	}

	stopFirst := launch("first", 20*time.Second)
	require.Eventually(t, func() bool { return listed("first") }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 20*time.Second, consumerWait())

	// Another executor with the same wait joins.
	stopSame := launch("same", 20*time.Second)
	require.Eventually(t, func() bool { return listed("same") }, 10*time.Second, 20*time.Millisecond)

	// One with another wait does not start, whatever it waited for.
	ex := New(Config{ID: "other", AckWait: 40 * time.Second, WorkDir: t.TempDir()}, f.bus, p, prometheus.NewRegistry(), log)
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	err := ex.Run(ctx)
	require.ErrorIs(t, err, errAckWaitDiffers)
	require.ErrorContains(t, err, "executors first, same run test with an ack wait of 20s")
	require.ErrorContains(t, err, "WES_EXECUTOR_ACK_WAIT=20s")
	require.Equal(t, 20*time.Second, consumerWait(), "the refused executor changed the consumer")
	require.False(t, listed("other"), "the refused executor is listed")

	// The executors still run the engine's runs.
	runID := f.submit(t)
	f.waitState(t, runID, models.Complete, 30*time.Second)

	// With every executor of the engine stopped (their entries gone), the
	// wait may change.
	require.NoError(t, stopFirst())
	require.NoError(t, stopSame())
	_, err = f.bus.Executors.Get(f.ctx, "first")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	stopChanged := launch("changed", 40*time.Second)
	require.Eventually(t, func() bool { return listed("changed") }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 40*time.Second, consumerWait())
	runID = f.submit(t)
	f.waitState(t, runID, models.Complete, 30*time.Second)
	require.NoError(t, stopChanged())
}

// engines is a provider of the named engines, each running as p does.
type engines struct {
	*testProvider
	names []string
}

func (e engines) Engines(context.Context) ([]providers.Engine, error) {
	var out []providers.Engine
	for _, n := range e.names {
		out = append(out, providers.Engine{Name: n, Version: "1.0", WorkflowTypes: map[string][]string{"CWL": {"v1.2"}}})
	}
	return out, nil
}

// TestARefusedExecutorChangesNoConsumer: an executor of two engines whose
// ack wait differs from the live executors' of one of them changes neither
// engine's consumer.
func TestARefusedExecutorChangesNoConsumer(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{}, nil
	}}
	log := slog.New(slog.NewTextHandler(tWriter{t}, nil))
	other := New(Config{ID: "other", AckWait: 20 * time.Second, WorkDir: t.TempDir()}, f.bus, engines{p, []string{"other"}}, prometheus.NewRegistry(), log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- other.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		_, err := f.bus.Executors.Get(f.ctx, "other")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	both := New(Config{ID: "both", AckWait: 40 * time.Second, WorkDir: t.TempDir()}, f.bus, engines{p, []string{"aaa", "other"}}, prometheus.NewRegistry(), log)
	rctx, rcancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer rcancel()
	require.ErrorIs(t, both.Run(rctx), errAckWaitDiffers)
	_, err := f.js.Consumer(f.ctx, f.names.RunsStream(), f.names.ExecutorConsumer("aaa"))
	require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "the refused executor created the first engine's consumer")
}
