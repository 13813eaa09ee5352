package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// blockUntilCanceled is a provider run that starts, waits for its context
// to end, then takes stopFor to stop and returns what stopping returns.
func blockUntilCanceled(stopFor time.Duration, stopping error) func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
	return func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine", job.RunID})
		<-ctx.Done()
		time.Sleep(stopFor)
		return providers.Result{}, errors.Join(ctx.Err(), stopping)
	}
}

// runUntilReleased returns a provider (without run directories) whose runs
// start, write line to stdout, and complete when release is closed, or end
// with the context's error.
func runUntilReleased(release <-chan struct{}, line string) providers.Provider {
	return dirlessProvider{&testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine"})
		fmt.Fprint(job.Stdout, line)
		select {
		case <-release:
			return providers.Result{}, nil
		case <-ctx.Done():
			return providers.Result{}, ctx.Err()
		}
	}}}
}

// TestHeartbeatsGoOnWhileTheEngineStops: an engine that takes longer than
// AckWait to stop after a cancel must not see its run delivered again
// meanwhile; and processes that survived the stop are reported.
func TestHeartbeatsGoOnWhileTheEngineStops(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const ackWait = time.Second
	survived := fmt.Errorf("%w: 1 process(es) of the run survived SIGKILL (pids [4242])", providers.ErrSurvivors)
	p := &testProvider{run: blockUntilCanceled(4*ackWait, survived)}
	f.start(t, Config{AckWait: ackWait, Slots: 2}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 30*time.Second)

	_, err := f.bus.Cancel.Put(f.ctx, runID, []byte("1"))
	require.NoError(t, err)
	canceled := f.waitState(t, runID, models.Canceled, 30*time.Second)
	require.Equal(t, 1, canceled.Attempt)
	require.Contains(t, canceled.SystemLog, "canceled by the user")
	require.Contains(t, canceled.SystemLog, "not every process of the run could be stopped")
	require.Contains(t, canceled.SystemLog, "pids [4242]")

	time.Sleep(2 * ackWait) // a redelivery would show by now
	for _, ev := range f.runEvents(t, runID) {
		require.Equal(t, 1, ev.Attempt, "the run was delivered again while its engine stopped:%s", describe(f.runEvents(t, runID)))
	}
	require.EqualValues(t, 1, p.calls.Load())
	require.Zero(t, f.runsLeft(t))
}

// TestACancelAfterTheEngineFinishedKeepsItsResult: the cancel flag
// reaches the attempt as its engine ends on its own (the provider returns
// a result, not the context's error). The run is COMPLETE, with its
// outputs: the cancel stopped nothing.
func TestACancelAfterTheEngineFinishedKeepsItsResult(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := dirlessProvider{&testProvider{run: func(ctx context.Context, _ providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine"})
		<-ctx.Done()
		return providers.Result{ExitCode: 0, Outputs: json.RawMessage(`{"answer":42}`)}, nil
	}}}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 30*time.Second)
	_, err := f.bus.Cancel.Put(f.ctx, runID, []byte("1"))
	require.NoError(t, err)
	done := f.waitState(t, runID, models.Complete, 30*time.Second)
	require.JSONEq(t, `{"answer":42}`, string(done.Outputs))
	for _, ev := range f.runEvents(t, runID) {
		require.NotEqual(t, models.Canceled, ev.State, "%s", describe(f.runEvents(t, runID)))
	}
}

// TestARefusedRequestIsTheUsers: a run the provider refuses for what it
// asks (an input naming a host path, say) ends EXECUTOR_ERROR with the
// reason, at once, even when failures are retried: it is not our failure
// (SYSTEM_ERROR), and another attempt would meet the same refusal.
func TestARefusedRequestIsTheUsers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{}, fmt.Errorf("%w: input \"/etc/passwd\" names a path of the executor's host", providers.ErrInvalidRequest)
	}}
	f.start(t, Config{AckWait: 5 * time.Second, MaxAttempts: 3, RetryFailures: true}, p)
	runID := f.submit(t)
	ev := f.waitState(t, runID, models.ExecutorError, 30*time.Second)
	require.Contains(t, ev.Error, "names a path of the executor's host")
	require.Contains(t, ev.SystemLog, "names a path of the executor's host")
	require.EqualValues(t, 1, p.calls.Load(), "a refused request was tried again")
	require.Zero(t, f.runsLeft(t), "the run's message is settled")
}

// TestCancelReachesTheRunAfterTheWatchFailed: the cancel flags' bucket is
// gone when the run starts, so the watch of its flag fails; once the bucket
// is back, a cancel must still reach the run.
func TestCancelReachesTheRunAfterTheWatchFailed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	require.NoError(t, f.js.DeleteStream(f.ctx, "KV_"+f.names.CancelBucket()))
	p := &testProvider{run: blockUntilCanceled(0, nil)}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	runID := f.submit(t)
	// Once the executor holds the run, its first watch has failed.
	require.Eventually(t, func() bool {
		cons, err := f.js.Consumer(f.ctx, f.names.RunsStream(), f.names.ExecutorConsumer(testEngine))
		if err != nil {
			return false
		}
		info, err := cons.Info(f.ctx)
		return err == nil && info.NumAckPending == 1
	}, 30*time.Second, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)

	f.provision(t)
	f.waitState(t, runID, models.Running, 30*time.Second)
	_, err := f.bus.Cancel.Put(f.ctx, runID, []byte("1"))
	require.NoError(t, err)
	f.waitState(t, runID, models.Canceled, 30*time.Second)
	require.EqualValues(t, 1, p.calls.Load())
}

// TestDeliveryLimits: deliveries that ended without an outcome (crashes)
// count against MaxAttempts; hand-backs, which executors report PREEMPTED,
// do not, up to MaxHandBacks. A delivery over the limits is terminated and
// the run reported SYSTEM_ERROR without running it.
func TestDeliveryLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                      string
		maxAttempts, maxHandBacks int
		// earlier lists the earlier deliveries: "crash" (started, no
		// outcome), "hand-back" (started, then an executor's PREEMPTED),
		// "reconciler" (started, then the API's PREEMPTED: an executor
		// stopped answering), "never started" (no event: a delivery an
		// attempt in progress took over, or whose executor died at once).
		earlier    []string
		wantRun    bool
		wantReason string
	}{
		{name: "crash loop", maxAttempts: 2, earlier: []string{"crash", "crash"},
			wantReason: "attempt 3 would exceed WES_MAX_ATTEMPTS (2)"},
		{name: "crashes the reconciler saw", maxAttempts: 2, earlier: []string{"reconciler", "reconciler"},
			wantReason: "attempt 3 would exceed WES_MAX_ATTEMPTS (2)"},
		{name: "hand-backs", maxAttempts: 2, earlier: []string{"hand-back", "crash", "hand-back"}, wantRun: true},
		{name: "handed back too often", maxAttempts: 1, maxHandBacks: 1, earlier: []string{"hand-back", "hand-back"},
			wantReason: "delivered 3 times (2 of them handed back"},
		{name: "deliveries that never started", maxAttempts: 2, earlier: []string{"crash", "never started", "never started"}, wantRun: true},
		{name: "too many deliveries that never started", maxAttempts: 1, maxHandBacks: 1, earlier: []string{"never started", "never started"},
			wantReason: "delivered 3 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			cfg := Config{AckWait: 5 * time.Second, MaxAttempts: tc.maxAttempts, MaxHandBacks: tc.maxHandBacks}
			runID := f.submit(t)

			// The earlier deliveries, on the executors' consumer.
			cons, err := f.js.CreateOrUpdateConsumer(f.ctx, f.names.RunsStream(), jetstream.ConsumerConfig{
				Durable: f.names.ExecutorConsumer(testEngine), FilterSubject: f.names.SubmitFilter(testEngine),
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.AckWait, MaxDeliver: -1,
			})
			require.NoError(t, err)
			for i, how := range tc.earlier {
				msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
				require.NoError(t, err)
				meta, err := msg.Metadata()
				require.NoError(t, err)
				require.EqualValues(t, i+1, meta.NumDelivered)
				if how != "never started" {
					require.NoError(t, f.pub.PublishEvent(f.ctx, events.RunEvent{RunID: runID, Attempt: i + 1, State: models.Initializing, Source: "executor-gone"}))
				}
				ev := events.RunEvent{RunID: runID, Attempt: i + 1, State: models.Preempted}
				switch how {
				case "hand-back":
					ev.Source = "executor-gone"
				case "reconciler":
					ev.Source = events.SourceAPI
				}
				if ev.Source != "" {
					require.NoError(t, f.pub.PublishEvent(f.ctx, ev))
				}
				require.NoError(t, msg.Nak())
			}

			p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
				return providers.Result{Outputs: []byte(`{}`)}, nil
			}}
			f.start(t, cfg, p)
			if tc.wantRun {
				done := f.waitState(t, runID, models.Complete, 30*time.Second)
				require.Equal(t, len(tc.earlier)+1, done.Attempt)
				var init events.RunEvent
				for _, ev := range f.runEvents(t, runID) {
					if ev.State == models.Initializing && ev.Attempt == done.Attempt {
						init = ev
					}
				}
				require.Contains(t, init.SystemLog, "handed back or never started")
				require.EqualValues(t, 1, p.calls.Load())
			} else {
				failed := f.waitState(t, runID, models.SystemError, 30*time.Second)
				require.Equal(t, len(tc.earlier)+1, failed.Attempt)
				require.Contains(t, failed.Error, tc.wantReason)
				require.Contains(t, failed.SystemLog, tc.wantReason)
				require.Zero(t, p.calls.Load(), "a run over the limit was run")
			}
			require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 10*time.Second, 100*time.Millisecond)
		})
	}
}

// TestAReusedDeliveryNumberIsRenumbered: JetStream may hand out a delivery
// count twice (after a crash). The attempt must not reuse the number: its
// events would be dropped as duplicates of the earlier attempt's.
func TestAReusedDeliveryNumberIsRenumbered(t *testing.T) {
	t.Parallel()
	f := setup(t)
	runID := f.submit(t)
	// An earlier attempt 1, on an executor that crashed, whose delivery
	// JetStream forgot.
	require.NoError(t, f.pub.PublishEvent(f.ctx, events.RunEvent{RunID: runID, Attempt: 1, State: models.Initializing, Source: "exec-gone"}))
	require.NoError(t, f.pub.PublishEvent(f.ctx, events.RunEvent{RunID: runID, Attempt: 1, State: models.Running, Source: "exec-gone"}))
	p := &testProvider{run: func(_ context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine", job.RunID})
		return providers.Result{}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	done := f.waitState(t, runID, models.Complete, 30*time.Second)
	require.Equal(t, 2, done.Attempt, "events:%s", describe(f.runEvents(t, runID)))
	var states []string
	for _, ev := range f.runEvents(t, runID) {
		if ev.Source != "exec-gone" {
			states = append(states, fmt.Sprintf("%s/%d", ev.State, ev.Attempt))
			if ev.State == models.Initializing {
				require.Contains(t, ev.SystemLog, "attempt 2 on executor")
			}
		}
	}
	require.Equal(t, []string{"INITIALIZING/2", "RUNNING/2", "COMPLETE/2"}, states)
	require.EqualValues(t, 1, p.calls.Load())
}

func TestLastAttemptAndHandBacks(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	history := []events.RunEvent{
		{Attempt: 1, State: models.Initializing, Source: "a", Time: at},
		{Attempt: 1, State: models.Preempted, Source: "a"},
		{Attempt: 2, State: models.Initializing, Source: "b", Time: at},
		{Attempt: 2, State: models.Preempted, Source: events.SourceAPI},
		{Attempt: 3, State: models.Initializing, Source: "c", Time: at.Add(time.Second)},
	}
	for _, tc := range []struct {
		name     string
		n        int
		mine     events.RunEvent
		wantLast int
		wantOwn  bool
	}{
		{name: "another executor's", n: 3, mine: events.RunEvent{Source: "c", Time: at}, wantLast: 3},
		{name: "mine, ack lost", n: 3, mine: events.RunEvent{Source: "c", Time: at.Add(time.Second)}, wantLast: 3, wantOwn: true},
		{name: "same time, other executor", n: 2, mine: events.RunEvent{Source: "a", Time: at}, wantLast: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			last, own := lastAttempt(history, tc.n, tc.mine)
			require.Equal(t, tc.wantLast, last)
			require.Equal(t, tc.wantOwn, own)
		})
	}
	// Only executors' PREEMPTED events are hand-backs, and only those
	// before delivery n.
	require.Equal(t, 0, handBacks(history, 1))
	require.Equal(t, 1, handBacks(history, 2))
	require.Equal(t, 1, handBacks(history, 4))
	// Attempts: deliveries that started and were not handed back, and this
	// one; delivery 5 follows a delivery 4 that never started.
	require.Equal(t, 1, triesAt(history, 1))
	require.Equal(t, 1, triesAt(history, 2), "attempt 1 was handed back")
	require.Equal(t, 2, triesAt(history, 3))
	require.Equal(t, 3, triesAt(history, 4))
	require.Equal(t, 3, triesAt(history, 5), "delivery 4 never started")
}

// TestRunDirectoriesAreRemovedOnceRunsAreOver: a finished run's directory
// goes (its logs and outputs are in the object store), unless the operator
// keeps them; a run's task updates reach the stream with its final event.
func TestRunDirectoriesAreRemovedOnceRunsAreOver(t *testing.T) {
	t.Parallel()
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			dir := t.TempDir()
			p := &testProvider{run: func(_ context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
				r.Started([]string{"engine", job.RunID})
				r.Task(models.TaskLog{ID: "t1", Name: "step"})
				r.Task(models.TaskLog{ID: "t1", Name: "step", ExitCode: new(int)})
				fmt.Fprintln(job.Stdout, "hello")
				return providers.Result{}, nil
			}}
			f.start(t, Config{AckWait: 5 * time.Second, WorkDir: dir, KeepRunDirs: keep}, p)
			runID := f.submit(t)
			done := f.waitState(t, runID, models.Complete, 30*time.Second)
			require.Len(t, done.Tasks, 1, "the last update of each task goes with the final event")
			require.NotNil(t, done.Tasks[0].ExitCode)
			require.Len(t, f.runEvents(t, runID), 3, "INITIALIZING, RUNNING, COMPLETE:%s", describe(f.runEvents(t, runID)))
			gone := func() bool {
				_, err := os.Stat(filepath.Join(dir, runID))
				return err != nil
			}
			if keep {
				require.Never(t, gone, time.Second, 20*time.Millisecond, "WES_KEEP_RUN_DIRS keeps the run directory")
			} else {
				require.Eventually(t, gone, 10*time.Second, 20*time.Millisecond, "the run directory is removed")
			}
			info, err := f.bus.Objects.GetInfo(f.ctx, events.LogKey(runID, "stdout"))
			require.NoError(t, err, "the log is stored before the directory goes")
			require.EqualValues(t, 6, info.Size)
		})
	}
}

// TestARetriedRunsDirectoryGoesWhenACancelEndsIt: a failed attempt that
// is retried keeps the run directory; when the run is then canceled while
// it waits, the delivery that ends it never stages, and the directory must
// go all the same.
func TestARetriedRunsDirectoryGoesWhenACancelEndsIt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dir := t.TempDir()
	started := make(chan string, 1)
	p := &testProvider{run: func(_ context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		if err := os.WriteFile(filepath.Join(job.Dir, "work-file"), []byte("x"), 0o600); err != nil {
			return providers.Result{}, err
		}
		started <- job.RunID
		return providers.Result{ExitCode: 1}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second, WorkDir: dir, RetryFailures: true, MaxAttempts: 3}, p)
	runID := f.submit(t)
	<-started
	f.waitState(t, runID, models.Queued, 10*time.Second)
	_, err := f.bus.Cancel.Put(f.ctx, runID, []byte("1"))
	require.NoError(t, err)
	f.waitState(t, runID, models.Canceled, 30*time.Second)
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, runID))
		return err != nil
	}, 10*time.Second, 20*time.Millisecond, "the directory the failed attempt left is removed")
}

// dirlessProvider is a testProvider that needs no run directory.
type dirlessProvider struct{ *testProvider }

func (dirlessProvider) Dirless() bool { return true }

// TestADirlessRunHasNoDirectoryAndItsLogsAreStored: a run of a provider
// that needs no directory writes nothing below WorkDir, and its stdout and
// stderr, kept in memory, reach the object store as they would from files.
func TestADirlessRunHasNoDirectoryAndItsLogsAreStored(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dir := t.TempDir()
	p := dirlessProvider{&testProvider{run: func(_ context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		if job.Dir != "" {
			return providers.Result{}, fmt.Errorf("job.Dir is %q", job.Dir)
		}
		r.Started([]string{"engine", job.RunID})
		fmt.Fprintln(job.Stdout, "out")
		fmt.Fprintln(job.Stderr, "err, longer")
		return providers.Result{}, nil
	}}}
	f.start(t, Config{AckWait: 5 * time.Second, WorkDir: dir}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Complete, 30*time.Second)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing is created below WorkDir")
	for name, want := range map[string]string{"stdout": "out\n", "stderr": "err, longer\n"} {
		got, err := f.bus.Objects.GetBytes(f.ctx, events.LogKey(runID, name))
		require.NoError(t, err, name)
		require.Equal(t, want, string(got), name)
	}
}

// TestNoEmptyFetchesBetweenRuns: an executor asks for more runs to fill its
// free slots only when the delivery it got says more are waiting. At a few
// runs a second that request would come back empty: a round trip per run.
// countNoWaitFetches counts the requests for runs that ask not to wait:
// those that fill an executor's free slots.
func countNoWaitFetches(t *testing.T, f *fixture) *atomic.Int32 {
	t.Helper()
	var noWait atomic.Int32
	sub, err := f.nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT."+f.names.RunsStream()+".>", func(m *nats.Msg) {
		if strings.Contains(string(m.Data), `"no_wait":true`) {
			noWait.Add(1)
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, f.nc.Flush())
	return &noWait
}

// instantProvider returns a provider that completes every run at once,
// without a directory.
func instantProvider() providers.Provider {
	return dirlessProvider{&testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{}, nil
	}}}
}

func TestNoEmptyFetchesBetweenRuns(t *testing.T) {
	t.Parallel()
	f := setup(t)
	noWait := countNoWaitFetches(t, f)
	// Runs waiting when it starts: it fills its free slots at once.
	queued := make([]string, 6)
	for i := range queued {
		queued[i] = f.submit(t)
	}
	f.start(t, Config{AckWait: 5 * time.Second, Slots: 4}, instantProvider())
	for _, id := range queued {
		f.waitState(t, id, models.Complete, 30*time.Second)
	}
	require.NoError(t, f.nc.Flush())
	require.NotZero(t, noWait.Load(), "the free slots are filled with one request")

	// One run at a time: nothing more waits when each is delivered.
	noWait.Store(0)
	for range 3 {
		f.waitState(t, f.submit(t), models.Complete, 30*time.Second)
	}
	require.NoError(t, f.nc.Flush())
	require.Zero(t, noWait.Load(), "requests for more runs while none waited")
}

// TestRedeliveredRunsFillFreeSlots: runs handed back (here with Nak, as an
// executor shutting down does) are delivered again, and the consumer
// counts none of them as pending. The first redelivery must still make
// the executor fill its free slots in one request.
func TestRedeliveredRunsFillFreeSlots(t *testing.T) {
	t.Parallel()
	f := setup(t)
	queued := make([]string, 6)
	for i := range queued {
		queued[i] = f.submit(t)
	}
	cfg := Config{AckWait: 5 * time.Second, Slots: 4}
	cons, err := f.js.CreateOrUpdateConsumer(f.ctx, f.names.RunsStream(), jetstream.ConsumerConfig{
		Durable:       f.names.ExecutorConsumer(testEngine),
		FilterSubject: f.names.SubmitFilter(testEngine),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
	})
	require.NoError(t, err)
	batch, err := cons.Fetch(len(queued), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	handedBack := 0
	for msg := range batch.Messages() {
		require.NoError(t, msg.Nak())
		handedBack++
	}
	require.Equal(t, len(queued), handedBack)
	require.NoError(t, f.nc.Flush())

	noWait := countNoWaitFetches(t, f)
	f.start(t, cfg, instantProvider())
	for _, id := range queued {
		f.waitState(t, id, models.Complete, 30*time.Second)
	}
	require.NoError(t, f.nc.Flush())
	require.NotZero(t, noWait.Load(), "the free slots are filled with one request when handed-back runs wait")
}

func TestMemLogDropsWhatIsPastItsLimit(t *testing.T) {
	var l memLog
	chunk := bytes.Repeat([]byte("x"), memLogLimit/2+1)
	for range 3 {
		n, err := l.Write(chunk)
		require.NoError(t, err)
		require.Equal(t, len(chunk), n, "a writer is never told of the limit")
	}
	r, size, ok := l.snapshot()
	require.True(t, ok)
	got, err := io.ReadAll(io.NewSectionReader(r, 0, size))
	require.NoError(t, err)
	require.EqualValues(t, len(got), size)
	require.True(t, bytes.HasPrefix(got, bytes.Repeat([]byte("x"), memLogLimit)))
	require.Equal(t, fmt.Sprintf("\n[wes: output beyond %d bytes was dropped]\n", memLogLimit), string(got[memLogLimit:]), "said once")

	// A snapshot does not change when the log grows after it.
	var g memLog
	fmt.Fprint(&g, "ab")
	r, size, _ = g.snapshot()
	fmt.Fprint(&g, "cd")
	got, _ = io.ReadAll(io.NewSectionReader(r, 0, size))
	require.Equal(t, "ab", string(got))
}

func TestTaskBufferKeepsTheNewestUpdate(t *testing.T) {
	var b taskBuffer
	b.add(models.TaskLog{ID: "a", Name: "1"})
	b.add(models.TaskLog{ID: "b", Name: "1"})
	b.add(models.TaskLog{ID: "a", Name: "2"})
	sent := b.take()
	require.Equal(t, []models.TaskLog{{ID: "a", Name: "2"}, {ID: "b", Name: "1"}}, sent)
	require.Empty(t, b.take())

	// The send failed; meanwhile b was updated again: its newer update wins.
	b.add(models.TaskLog{ID: "b", Name: "3"})
	b.putBack(sent)
	require.Equal(t, []models.TaskLog{{ID: "b", Name: "3"}, {ID: "a", Name: "2"}}, b.take())
}

// TestARedeliveryOfARunningRunJoinsItsAttempt: JetStream delivers a run
// again while this executor still runs it (here AckWait is cut below the
// heartbeat interval, as when heartbeats cannot reach a consumer electing
// a leader). The attempt in progress must take the new delivery over: no
// second attempt beside it, and its outcome settles the run's message.
func TestARedeliveryOfARunningRunJoinsItsAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	release := make(chan struct{})
	p := &testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine", job.RunID})
		select {
		case <-release:
			return providers.Result{ExitCode: 0}, nil
		case <-ctx.Done():
			return providers.Result{}, ctx.Err()
		}
	}}
	f.start(t, Config{AckWait: 30 * time.Second, Slots: 4}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 30*time.Second)

	// Heartbeats come every 10 s; with AckWait at 300 ms JetStream
	// delivers the run again and again.
	durable := f.names.ExecutorConsumer(testEngine)
	cons, err := f.js.Consumer(f.ctx, f.names.RunsStream(), durable)
	require.NoError(t, err)
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 300 * time.Millisecond
	_, err = f.js.UpdateConsumer(f.ctx, f.names.RunsStream(), cfg)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(f.ctx)
		return err == nil && info.NumRedelivered > 0
	}, 10*time.Second, 50*time.Millisecond, "JetStream did not deliver the run again")
	time.Sleep(time.Second) // a few more deliveries

	close(release)
	done := f.waitState(t, runID, models.Complete, 30*time.Second)
	require.Equal(t, 1, done.Attempt)
	for _, ev := range f.runEvents(t, runID) {
		require.Equal(t, 1, ev.Attempt, "a second attempt ran beside the first:%s", describe(f.runEvents(t, runID)))
	}
	require.EqualValues(t, 1, p.calls.Load())
	require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 5*time.Second, 50*time.Millisecond,
		"the run's message is still queued: settling did not reach the latest delivery")
}

// TestOutputsAreStoredAndTheirLocationsRewritten: a stored output's
// location becomes a reference to the object store, even when the engine
// percent-encoded it (cwltool does); a file over WES_MAX_OUTPUT_BYTES
// keeps its local location, and the run's directory, which holds its only
// copy, is not removed.
func TestOutputsAreStoredAndTheirLocationsRewritten(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := &testProvider{run: func(_ context.Context, job providers.Job, _ providers.Reporter) (providers.Result, error) {
		out := filepath.Join(job.Dir, "outputs")
		if err := os.MkdirAll(out, 0o750); err != nil {
			return providers.Result{}, err
		}
		if err := os.WriteFile(filepath.Join(out, "a b#c.txt"), []byte("small"), 0o640); err != nil {
			return providers.Result{}, err
		}
		if err := os.WriteFile(filepath.Join(out, "big.bin"), bytes.Repeat([]byte("x"), 200), 0o640); err != nil {
			return providers.Result{}, err
		}
		for _, d := range []string{"d", "bd"} {
			if err := os.MkdirAll(filepath.Join(out, d), 0o750); err != nil {
				return providers.Result{}, err
			}
		}
		if err := os.WriteFile(filepath.Join(out, "d", "x.txt"), []byte("x"), 0o640); err != nil {
			return providers.Result{}, err
		}
		if err := os.WriteFile(filepath.Join(out, "bd", "big2.bin"), bytes.Repeat([]byte("y"), 200), 0o640); err != nil {
			return providers.Result{}, err
		}
		small := (&url.URL{Scheme: "file", Path: filepath.Join(out, "a b#c.txt")}).String()
		loc := func(rel string) string { return "file://" + filepath.Join(out, rel) }
		outputs, err := json.Marshal(map[string]any{
			"small": map[string]any{"class": "File", "location": small},
			"big":   map[string]any{"class": "File", "location": loc("big.bin")},
			"dir": map[string]any{"class": "Directory", "location": loc("d"), "path": filepath.Join(out, "d"),
				"listing": []any{map[string]any{"class": "File", "location": loc("d/x.txt")}}},
			"bigdir": map[string]any{"class": "Directory", "location": loc("bd"),
				"listing": []any{map[string]any{"class": "File", "location": loc("bd/big2.bin")}}},
		})
		return providers.Result{Outputs: outputs, OutputDir: out}, err
	}}
	workDir := t.TempDir()
	f.start(t, Config{AckWait: 5 * time.Second, WorkDir: workDir, MaxOutputBytes: 100}, p)
	runID := f.submit(t)
	done := f.waitState(t, runID, models.Complete, 30*time.Second)

	var got map[string]struct {
		Location string `json:"location"`
		Path     string `json:"path"`
		Listing  []struct {
			Location string `json:"location"`
		} `json:"listing"`
	}
	require.NoError(t, json.Unmarshal(done.Outputs, &got))
	require.Equal(t, events.OutputLocationScheme+"a b#c.txt", got["small"].Location, "%s", done.Outputs)
	require.Equal(t, "file://"+filepath.Join(workDir, runID, "outputs", "big.bin"), got["big"].Location)
	// A directory whose files are all stored is its listing alone; one
	// that keeps a file over the cap keeps its local location too.
	require.Empty(t, got["dir"].Location, "a stored directory's local location dangles: %s", done.Outputs)
	require.Empty(t, got["dir"].Path)
	require.Equal(t, events.OutputLocationScheme+"d/x.txt", got["dir"].Listing[0].Location)
	require.Equal(t, "file://"+filepath.Join(workDir, runID, "outputs", "bd"), got["bigdir"].Location)
	require.Contains(t, done.SystemLog, "exceed WES_MAX_OUTPUT_BYTES")
	obj, err := f.bus.Objects.GetBytes(f.ctx, events.OutputKey(runID, "a b#c.txt"))
	require.NoError(t, err)
	require.Equal(t, "small", string(obj))
	time.Sleep(200 * time.Millisecond) // a removal would be under way
	require.FileExists(t, filepath.Join(workDir, runID, "outputs", "big.bin"), "the only copy of an output over the cap is kept")
}

// TestTheLastLogCopyIsTriedAgain: the object store is gone for a moment
// when the run ends (its stream electing a leader, say). The last copy of
// the logs, their tail, is tried again until it is stored.
func TestTheLastLogCopyIsTriedAgain(t *testing.T) {
	t.Parallel()
	f := setup(t)
	release := make(chan struct{})
	p := runUntilReleased(release, "the tail\n")
	// No copy while the run goes on: the last one is the only one.
	f.start(t, Config{AckWait: 5 * time.Second, LogInterval: time.Hour}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 30*time.Second)

	require.NoError(t, f.js.DeleteStream(f.ctx, "OBJ_"+f.names.ObjectsBucket()))
	close(release)
	// JetStream's publish itself tries a stream that is not there for
	// half a second; this outlasts two of our tries.
	time.Sleep(1500 * time.Millisecond)
	f.provision(t)

	f.waitState(t, runID, models.Complete, 30*time.Second)
	got, err := f.bus.Objects.GetBytes(f.ctx, events.LogKey(runID, "stdout"))
	require.NoError(t, err, "the log's last copy was not tried again")
	require.Equal(t, "the tail\n", string(got))
}

// startLogWriter starts an executor (logs copied every 50 ms) whose runs
// print each line sent on lines to stdout, and end once done is called
// (at the latest when the test ends, before the executor stops).
func (f *fixture) startLogWriter(t *testing.T) (lines chan<- string, done func()) {
	t.Helper()
	ch := make(chan string)
	p := dirlessProvider{&testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine"})
		for line := range ch {
			fmt.Fprint(job.Stdout, line)
		}
		return providers.Result{}, nil
	}}}
	f.start(t, Config{AckWait: 5 * time.Second, LogInterval: 50 * time.Millisecond}, p)
	var once sync.Once
	done = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(done)
	return ch, done
}

// TestARunningLogIsAppendedTo: each copy of a running run's log stores what
// it grew by, as more chunks of the same object; the last copy completes it.
func TestARunningLogIsAppendedTo(t *testing.T) {
	t.Parallel()
	f := setup(t)
	lines, done := f.startLogWriter(t)
	runID := f.submit(t)
	key := events.LogKey(runID, "stdout")
	var want string
	var nuid string
	for i := range 5 {
		line := fmt.Sprintf("line %d\n", i)
		lines <- line
		want += line
		var info *jetstream.ObjectInfo
		require.Eventually(t, func() bool {
			var err error
			info, err = f.bus.Objects.GetInfo(f.ctx, key)
			return err == nil && info.Size == uint64(len(want))
		}, 10*time.Second, 10*time.Millisecond, "copy %d", i)
		require.EqualValues(t, i+1, info.Chunks, "a chunk per copy")
		if i > 0 {
			require.Equal(t, nuid, info.NUID, "appended to, not stored anew")
		}
		nuid = info.NUID
	}
	lines <- "the tail\n"
	want += "the tail\n"
	done()
	f.waitState(t, runID, models.Complete, 30*time.Second)
	got, err := f.bus.Objects.GetString(f.ctx, key)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// TestARunningLogIsStoredWholeAtTheEnd: with an object retention, the last
// copy of a log that was appended to stores it whole, so that its chunks
// all expire together, with its info.
func TestARunningLogIsStoredWholeAtTheEnd(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// The API's process applies the retention; the executor's bus reads it
	// from the object store.
	_, err := events.Provision(f.ctx, f.js, f.names, events.Config{Owner: true, ObjectRetention: time.Hour})
	require.NoError(t, err)
	f.provision(t)
	lines, done := f.startLogWriter(t)
	runID := f.submit(t)
	key := events.LogKey(runID, "stdout")
	var want string
	var running *jetstream.ObjectInfo
	for i := range 2 {
		line := fmt.Sprintf("line %d\n", i)
		lines <- line
		want += line
		require.Eventually(t, func() bool {
			var err error
			running, err = f.bus.Objects.GetInfo(f.ctx, key)
			return err == nil && running.Size == uint64(len(want))
		}, 10*time.Second, 10*time.Millisecond, "copy %d", i)
	}
	require.EqualValues(t, 2, running.Chunks, "appended to while the run goes on")
	done()
	f.waitState(t, runID, models.Complete, 30*time.Second)
	last, err := f.bus.Objects.GetInfo(f.ctx, key)
	require.NoError(t, err)
	require.NotEqual(t, running.NUID, last.NUID, "stored whole at the end")
	require.EqualValues(t, 1, last.Chunks)
	got, err := f.bus.Objects.GetString(f.ctx, key)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// TestADrainingExecutorStaysListed: once an executor stops pulling, its
// registry entry says it is draining (the API offers its engines no more)
// and stays until its runs in flight are over, so that the reconciler does
// not take them for orphans; then it goes.
func TestADrainingExecutorStaysListed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	release := make(chan struct{})
	p := runUntilReleased(release, "")
	id := "drainer-" + randomHex(t, 3)
	ex := New(Config{ID: id, AckWait: 5 * time.Second, ShutdownGrace: time.Minute, WorkDir: t.TempDir()},
		f.bus, p, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 30*time.Second)

	entry := func() (events.ExecutorInfo, error) {
		var info events.ExecutorInfo
		e, err := f.bus.Executors.Get(f.ctx, id)
		if err == nil {
			err = json.Unmarshal(e.Value(), &info)
		}
		return info, err
	}
	info, err := entry()
	require.NoError(t, err)
	require.False(t, info.Draining)

	cancel() // the executor shuts down with a run in flight
	require.Eventually(t, func() bool {
		info, err := entry()
		return err == nil && info.Draining
	}, 10*time.Second, 20*time.Millisecond, "the entry does not say the executor is draining")
	time.Sleep(300 * time.Millisecond)
	_, err = entry()
	require.NoError(t, err, "the entry went while a run was in flight")

	close(release)
	f.waitState(t, runID, models.Complete, 30*time.Second)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the executor did not stop")
	}
	_, err = entry()
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the entry stays once the executor stopped")
}

// Outputs take the time their size needs to be stored, not the report's:
// a workflow whose outputs upload for longer than WES_EXECUTOR_REPORT_TIMEOUT
// still completes (it used to be retried, and to end SYSTEM_ERROR).
func TestLargeOutputsOutlastTheReportTimeout(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const size = 64 << 20
	p := &testProvider{run: func(_ context.Context, job providers.Job, _ providers.Reporter) (providers.Result, error) {
		out := filepath.Join(job.Dir, "outputs")
		if err := os.MkdirAll(out, 0o750); err != nil {
			return providers.Result{}, err
		}
		if err := os.WriteFile(filepath.Join(out, "large.bin"), bytes.Repeat([]byte("z"), size), 0o640); err != nil {
			return providers.Result{}, err
		}
		return providers.Result{Outputs: []byte(`{"large":{"class":"File","location":"file://` + filepath.Join(out, "large.bin") + `"}}`), OutputDir: out}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second, ReportTimeout: 150 * time.Millisecond, MaxOutputBytes: 2 * size}, p)
	runID := f.submit(t)
	start := time.Now()
	done := f.waitState(t, runID, models.Complete, 60*time.Second)
	t.Logf("completed in %s", time.Since(start))
	require.Contains(t, string(done.Outputs), events.OutputLocationScheme+"large.bin")
	info, err := f.bus.Objects.GetInfo(f.ctx, events.OutputKey(runID, "large.bin"))
	require.NoError(t, err)
	require.EqualValues(t, size, info.Size)
	var states []models.State
	for _, ev := range f.runEvents(t, runID) {
		states = append(states, ev.State)
	}
	require.Equal(t, []models.State{models.Initializing, models.Complete}, states, "one attempt, not retried")
}

// An undecodable submission goes to the dead-letter stream with its reason,
// is not delivered again, and does not hold up the runs behind it.
func TestAPoisonSubmissionIsDeadLettered(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := &testProvider{run: func(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
		return providers.Result{Outputs: []byte(`{}`)}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second}, dirlessProvider{p})
	poison := f.names.SubmitSubject(testEngine, "poison")
	_, err := f.js.Publish(f.ctx, poison, []byte("not json"))
	require.NoError(t, err)
	f.waitState(t, f.submit(t), models.Complete, 30*time.Second)

	dead := deadLetters(t, f.js, f.names)
	require.Len(t, dead, 1)
	require.Contains(t, dead[0].Headers().Get("Wes-Dead-Reason"), "undecodable")
	require.Equal(t, poison, dead[0].Headers().Get("Wes-Dead-Subject"))
	require.Equal(t, "not json", string(dead[0].Data()))
	require.Eventually(t, func() bool { return f.runsLeft(t) == 0 }, 10*time.Second, 100*time.Millisecond, "the poison message is settled for good")
}

// deadLetters returns the messages of the dead-letter stream.
func deadLetters(t *testing.T, js jetstream.JetStream, names events.Names) []jetstream.Msg {
	t.Helper()
	cons, err := js.OrderedConsumer(context.Background(), names.DeadLetterStream(), jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
	require.NoError(t, err)
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

// enginesProvider offers the test provider's runs under several engines.
type enginesProvider struct {
	*testProvider
	names []string
}

func (p enginesProvider) Engines(context.Context) ([]providers.Engine, error) {
	var out []providers.Engine
	for _, n := range p.names {
		out = append(out, providers.Engine{Name: n, Version: "1.0", WorkflowTypes: map[string][]string{"CWL": {"v1.2"}}})
	}
	return out, nil
}

func (p enginesProvider) Dirless() bool { return true }

// With several engines, the slots an idle engine's wait holds do not keep
// another engine's runs queued: a run submitted while a slot is free
// starts within a second (it waited 5 s and more, a slot at a time).
func TestAFreeSlotIsNotHeldByAnIdleEngine(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := &testProvider{run: func(ctx context.Context, _ providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine"})
		select {
		case <-ctx.Done():
			return providers.Result{}, ctx.Err()
		case <-time.After(6 * time.Second):
			return providers.Result{Outputs: []byte(`{}`)}, nil
		}
	}}
	f.start(t, Config{AckWait: 5 * time.Second, Slots: 3}, enginesProvider{p, []string{testEngine, "idle-a", "idle-b"}})
	time.Sleep(time.Second) // every engine's fetch waits

	first := f.submit(t)
	f.waitState(t, first, models.Running, 10*time.Second)
	second := f.submit(t)
	submitted := time.Now()
	f.waitState(t, second, models.Running, 10*time.Second)
	waited := time.Since(submitted)
	t.Logf("the second run started %s after its submission", waited)
	require.Less(t, waited, 2*time.Second, "a run waited for a slot an idle engine held")
}

// A run handed back at shutdown keeps its place: it is delivered before
// the runs queued behind it (a Nak'd message is redelivered first; a
// message queued anew would wait behind them all).
func TestAHandedBackRunKeepsItsPlace(t *testing.T) {
	f := setup(t)
	var mu sync.Mutex
	var order []string
	block := true
	p := &testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		mu.Lock()
		order = append(order, job.RunID)
		b := block
		mu.Unlock()
		r.Started([]string{"engine"})
		if b {
			<-ctx.Done()
			return providers.Result{}, ctx.Err()
		}
		time.Sleep(200 * time.Millisecond)
		return providers.Result{Outputs: []byte(`{}`)}, nil
	}}
	log := slog.New(slog.NewTextHandler(tWriter{t}, nil))
	a := New(Config{ID: "A", Slots: 1, AckWait: 5 * time.Second, ShutdownGrace: 100 * time.Millisecond, WorkDir: t.TempDir()}, f.bus, dirlessProvider{p}, prometheus.NewRegistry(), log)
	actx, stopA := context.WithCancel(context.Background())
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(actx) }()
	first := f.submit(t)
	f.waitState(t, first, models.Running, 20*time.Second)
	var later []string
	for range 3 {
		later = append(later, f.submit(t))
	}
	stopA()
	require.NoError(t, <-aDone)
	mu.Lock()
	block, order = false, nil
	mu.Unlock()
	f.start(t, Config{ID: "B", Slots: 1, AckWait: 5 * time.Second}, dirlessProvider{p})
	f.waitState(t, first, models.Complete, 30*time.Second)
	for _, id := range later {
		f.waitState(t, id, models.Complete, 30*time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("start order after the hand-back: %v (handed back: %s)", order, first)
	require.Equal(t, first, order[0], "the handed-back run waited behind runs submitted after it started")
}
