package executor

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// flakyGets fails the first `fails` reads of a key (a NATS hiccup: three
// 2 s timeouts in a row), while the bucket's watch stays healthy.
type flakyGets struct {
	jetstream.KeyValue
	fails atomic.Int32
}

func (k *flakyGets) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if k.fails.Add(-1) >= 0 {
		return nil, errors.New("nats: timeout")
	}
	return k.KeyValue.Get(ctx, key)
}

// A run canceled while it waited in the queue, whose cancel flag cannot be
// read when the executor starts it, is still canceled: the watch reports
// only updates, so it reads the flag again until it can.
func TestACancelFlagUnreadAtTheStartStillStopsTheRun(t *testing.T) {
	f := setup(t)
	kv := &flakyGets{KeyValue: f.bus.Cancel}
	b := *f.bus
	b.Cancel = kv
	f.bus = &b

	p := &testProvider{run: func(ctx context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		r.Started([]string{"engine"})
		select {
		case <-ctx.Done():
			return providers.Result{}, ctx.Err()
		case <-time.After(4 * time.Second):
			return providers.Result{Outputs: []byte(`{}`)}, nil
		}
	}}
	f.start(t, Config{AckWait: 5 * time.Second}, dirlessProvider{p})
	time.Sleep(500 * time.Millisecond) // the executor's watch is up
	kv.fails.Store(3)
	runID := randomHex(t, 8)
	_, err := f.bus.Cancel.Put(f.ctx, runID, []byte("now")) // the API: flag first...
	require.NoError(t, err)
	// ...then the run's message is delivered (it was queued before the cancel).
	f.submitID(t, runID)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := events.Replay(f.runEvents(t, runID))
		if st.Terminal() {
			t.Logf("events:%s", describe(f.runEvents(t, runID)))
			require.Equal(t, models.Canceled, st, "a run whose cancel flag was set before it started ran to the end")
			return
		}
		require.True(t, time.Now().Before(deadline))
		time.Sleep(200 * time.Millisecond)
	}
}

// endableWatch is a cancel bucket whose watch the test can end, and then
// refuse to start again while failing is set; reads go through.
type endableWatch struct {
	jetstream.KeyValue
	failing atomic.Bool
	mu      sync.Mutex
	end     chan struct{} // closed to end the current watch
}

func (k *endableWatch) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if k.failing.Load() {
		return nil, errors.New("nats: no responders")
	}
	w, err := k.KeyValue.WatchAll(ctx, opts...)
	if err != nil {
		return nil, err
	}
	end := make(chan struct{})
	k.mu.Lock()
	k.end = end
	k.mu.Unlock()
	out := make(chan jetstream.KeyValueEntry)
	go func() {
		defer close(out)
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				select {
				case out <- e:
				case <-end:
					return
				}
			case <-end:
				return
			}
		}
	}()
	return endableWatcher{w, out}, nil
}

// endWatch ends the current watch, and fails the next ones.
func (k *endableWatch) endWatch() {
	k.failing.Store(true)
	k.mu.Lock()
	defer k.mu.Unlock()
	close(k.end)
}

type endableWatcher struct {
	jetstream.KeyWatcher
	out chan jetstream.KeyValueEntry
}

func (w endableWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.out }

// A cancel flag set while the cancel watch was down (and so in no update
// of the next one) reaches the run when the watch is back: the watch reads
// the flag of every run it holds when it starts.
func TestACancelSetWhileTheWatchWasDownReachesTheRun(t *testing.T) {
	t.Parallel()
	f := setup(t)
	kv := &endableWatch{KeyValue: f.bus.Cancel}
	b := *f.bus
	b.Cancel = kv
	f.bus = &b
	p := &testProvider{run: blockUntilCanceled(0, nil)}
	f.start(t, Config{AckWait: 5 * time.Second}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Running, 30*time.Second)

	kv.endWatch()
	_, err := f.bus.Cancel.Put(f.ctx, runID, []byte("1"))
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond) // no watch sees it
	kv.failing.Store(false)
	f.waitState(t, runID, models.Canceled, 30*time.Second)
}
