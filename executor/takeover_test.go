package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// TestATakenOverAttemptLeavesTheMessageToItsSuccessor: when no heartbeat
// reaches JetStream within AckWait, the run goes to another executor while
// the first attempt runs on. JetStream takes an Ack of the first delivery
// for one of the latest; were the first attempt to settle the message, and
// the executor that took over to die, nothing would ever run the run
// again. The first attempt stops when it hears of the takeover, or, if it
// missed it, leaves the message alone when it ends.
func TestATakenOverAttemptLeavesTheMessageToItsSuccessor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		ackWait time.Duration
		// heard: the takeover comes after half of AckWait, when the attempt
		// listens for it; else before, and the attempt ends later.
		heard bool
	}{
		{name: "heard: the engine is stopped", ackWait: 2 * time.Second, heard: true},
		{name: "missed: the last look before settling", ackWait: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			release := make(chan struct{})
			stopped := make(chan error, 1)
			p := &testProvider{}
			p.run = func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
				r.Started([]string{"engine", job.RunID})
				if p.calls.Load() > 1 {
					return providers.Result{Outputs: []byte(`{}`)}, nil
				}
				fmt.Fprintln(job.Stdout, "attempt 1")
				select {
				case <-release:
					return providers.Result{Outputs: []byte(`{}`)}, nil
				case <-ctx.Done():
					fmt.Fprintln(job.Stdout, "attempt 1 stopping")
					stopped <- context.Cause(ctx)
					return providers.Result{}, ctx.Err()
				}
			}
			f.start(t, Config{AckWait: tc.ackWait, Slots: 1, LogInterval: 100 * time.Millisecond}, p)
			runID := f.submit(t)
			running := f.waitState(t, runID, models.Running, 30*time.Second)

			// JetStream gives the run to "another executor" (this test)
			// despite the heartbeats: AckWait shorter than their interval,
			// for a moment. The executor's one slot is busy, so the
			// redelivery comes here.
			cons, err := f.js.Consumer(f.ctx, f.names.RunsStream(), f.names.ExecutorConsumer(testEngine))
			require.NoError(t, err)
			cfg := cons.CachedInfo().Config
			cfg.AckWait = 100 * time.Millisecond
			_, err = f.js.UpdateConsumer(f.ctx, f.names.RunsStream(), cfg)
			require.NoError(t, err)
			taken, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			require.NoError(t, err)
			meta, err := taken.Metadata()
			require.NoError(t, err)
			require.EqualValues(t, 2, meta.NumDelivered)
			cfg.AckWait = tc.ackWait
			_, err = f.js.UpdateConsumer(f.ctx, f.names.RunsStream(), cfg)
			require.NoError(t, err)

			logKey := events.LogKey(runID, "stdout")
			if tc.heard {
				// The attempt that took over writes the run's log from now on.
				require.Eventually(t, func() bool {
					b, err := f.bus.Objects.GetBytes(f.ctx, logKey)
					return err == nil && string(b) == "attempt 1\n"
				}, 10*time.Second, 50*time.Millisecond, "the first attempt's log was not stored")
				_, err := f.bus.PutObject(f.ctx, logKey, strings.NewReader("attempt 2\n"), events.PutOptions{})
				require.NoError(t, err)
				time.Sleep(time.Until(running.Time.Add(tc.ackWait/2 + 500*time.Millisecond)))
			} else {
				require.Less(t, time.Since(running.Time), tc.ackWait/2-time.Second, "too slow to take the run over before the attempt listens")
			}
			require.NoError(t, f.pub.PublishEvent(f.ctx, events.RunEvent{RunID: runID, Attempt: 2, State: models.Initializing, Source: "exec-b"}))
			if tc.heard {
				select {
				case cause := <-stopped:
					require.ErrorIs(t, cause, errTakenOver)
				case <-time.After(10 * time.Second):
					t.Fatal("the attempt taken over was not stopped")
				}
				time.Sleep(500 * time.Millisecond) // its last log copy would be done
				b, err := f.bus.Objects.GetBytes(f.ctx, logKey)
				require.NoError(t, err)
				require.Equal(t, "attempt 2\n", string(b), "the attempt taken over replaced the log of the one that took over")
			} else {
				time.Sleep(time.Until(running.Time.Add(tc.ackWait/2 + 500*time.Millisecond)))
				close(release)
				done := f.waitState(t, runID, models.Complete, 30*time.Second)
				require.Equal(t, 1, done.Attempt)
			}

			// The executor that took over dies (the test never settles its
			// delivery): JetStream delivers the run again once AckWait has
			// passed, and a third attempt carries it out.
			deadline := time.Now().Add(tc.ackWait + 30*time.Second)
			for {
				st, n := events.Replay(f.runEvents(t, runID))
				if st == models.Complete && n == 3 {
					break
				}
				require.True(t, time.Now().Before(deadline), "the run was not delivered again after its attempts were lost: it ends %s at attempt %d; events:%s",
					st, n, describe(f.runEvents(t, runID)))
				time.Sleep(200 * time.Millisecond)
			}
			require.EqualValues(t, 2, p.calls.Load())
			require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 10*time.Second, 100*time.Millisecond)
		})
	}
}

// TestADeliveryOfAnEndedRunIsNotRun: an executor that reported a run's
// outcome and died before it settled the message leaves the run to be
// delivered again; that delivery is acknowledged, not run a second time.
func TestADeliveryOfAnEndedRunIsNotRun(t *testing.T) {
	t.Parallel()
	f := setup(t)
	runID := f.submit(t)
	cons, err := f.js.CreateOrUpdateConsumer(f.ctx, f.names.RunsStream(), jetstream.ConsumerConfig{
		Durable: f.names.ExecutorConsumer(testEngine), FilterSubject: f.names.SubmitFilter(testEngine),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxDeliver: -1,
	})
	require.NoError(t, err)
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	require.NoError(t, err)
	for _, st := range []models.State{models.Initializing, models.Running, models.Complete} {
		require.NoError(t, f.pub.PublishEvent(f.ctx, events.RunEvent{RunID: runID, Attempt: 1, State: st, Source: "exec-gone"}))
	}
	require.NoError(t, msg.Nak()) // as AckWait would, after the crash

	p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{Outputs: []byte(`{}`)}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 30*time.Second, 100*time.Millisecond)
	require.Zero(t, p.calls.Load(), "a run that had ended was run again")
	require.Len(t, f.runEvents(t, runID), 3, "events:%s", describe(f.runEvents(t, runID)))
}

// A run queued again by the reconciler (its message was lost) goes on
// from the attempts it had: they count against WES_MAX_ATTEMPTS, and
// their numbers are not reused.
func TestARequeuedRunGoesOnFromItsAttempts(t *testing.T) {
	t.Parallel()
	f := setup(t)
	runID := randomHex(t, 8)
	subject, msgID, data, err := f.pub.EncodeSubmitted(events.RunSubmitted{
		RunID: runID, Engine: testEngine, SubmittedAt: time.Now().UTC(), PriorAttempts: 2,
		Request: models.RunRequest{WorkflowURL: "https://example.org/workflow.cwl", WorkflowType: "CWL", WorkflowTypeVersion: "v1.2"},
	})
	require.NoError(t, err)
	// Its two attempts, which failed and were to be retried when the
	// queue lost the run.
	for attempt := 1; attempt <= 2; attempt++ {
		for _, st := range []models.State{models.Initializing, models.Running, models.Queued} {
			require.NoError(t, f.pub.PublishEvent(f.ctx, events.RunEvent{RunID: runID, Attempt: attempt, State: st, Source: "exec-gone"}))
		}
	}
	require.NoError(t, f.pub.Publish(f.ctx, subject, msgID+".requeued.7", data))
	p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{ExitCode: 3}, nil
	}}
	// A failure is retried while attempts are left: the third is the last.
	f.start(t, Config{AckWait: 5 * time.Second, MaxAttempts: 3, RetryFailures: true}, p)
	done := f.waitState(t, runID, models.ExecutorError, 30*time.Second)
	require.Equal(t, 3, done.Attempt, "events:%s", describe(f.runEvents(t, runID)))
	require.EqualValues(t, 1, p.calls.Load(), "no retry beyond WES_MAX_ATTEMPTS")
}

// lostPubAck stores a submission but reports a timeout, as a server that
// dies (or a leader that moves) after storing it but before answering does.
type lostPubAck struct {
	jetstream.JetStream
	on atomic.Bool
}

func (j *lostPubAck) Publish(ctx context.Context, subj string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.Publish(ctx, subj, data, opts...)
	if err == nil && j.on.Load() && strings.Contains(subj, ".runs.submitted.") {
		return nil, errors.New("nats: timeout")
	}
	return ack, err
}

// A run queued anew at a hand-back (wes dev's executor) whose new message
// was stored but not acknowledged is not also handed back: two messages
// would be two deliveries of one attempt number, run at once.
func TestAHandBackQueuedAnewWhoseAckIsLostRunsOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	js := &lostPubAck{JetStream: f.bus.JS}
	b := *f.bus
	b.JS = js
	var running, maxRunning, calls atomic.Int32
	p := &testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		r.Started([]string{"engine"})
		select {
		case <-ctx.Done():
			return providers.Result{}, ctx.Err()
		case <-time.After(8 * time.Second):
			return providers.Result{Outputs: []byte(`{}`)}, nil
		}
	}}
	log := slog.New(slog.NewTextHandler(tWriter{t}, nil))
	// Executor A: runs the run, then shuts down and hands it back.
	js.on.Store(true)
	a := New(Config{ID: "A", AckWait: 4 * time.Second, ShutdownGrace: 100 * time.Millisecond, WorkDir: t.TempDir(), QueueHandBacksAnew: true}, &b, dirlessProvider{p}, prometheus.NewRegistry(), log)
	actx, stopA := context.WithCancel(context.Background())
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(actx) }()
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 20*time.Second)
	stopA()
	require.NoError(t, <-aDone)
	require.EqualValues(t, 1, f.runsLeft(t), "one message for the run after the hand-back")
	js.on.Store(false)
	calls.Store(0)

	// Two healthy executors pick the run up.
	f.start(t, Config{ID: "B", AckWait: 4 * time.Second}, dirlessProvider{p})
	f.start(t, Config{ID: "C", AckWait: 4 * time.Second}, dirlessProvider{p})
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, _ := events.Replay(f.runEvents(t, runID))
		if st.Terminal() || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("events:%s", describe(f.runEvents(t, runID)))
	t.Logf("engine runs after the hand-back: %d, at most %d at once", calls.Load(), maxRunning.Load())
	require.EqualValues(t, 1, maxRunning.Load(), "two executors ran the workflow of one run at once")
	require.EqualValues(t, 1, calls.Load(), "a handed-back run was started more than once")
}
