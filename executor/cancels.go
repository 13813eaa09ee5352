package executor

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// cancelWatch brings cancel flags to the attempts this executor holds, with
// one watch of the whole cancel bucket for the executor rather than one per
// run: a watch is a consumer on the server, and creating and deleting one
// for every run costs more than the rest of a short run.
type cancelWatch struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu sync.Mutex
	// subs holds, by run id, the callbacks of the attempts that hold the
	// run here (two, for a moment, when it was delivered again).
	subs map[string]map[*func()]bool
	// unread holds the subscribed runs whose flag could not be read (it
	// may have been set before the watch could see it): it is read again
	// every unreadInterval until a read succeeds.
	unread map[string]bool
}

// unreadInterval is how often a flag that could not be read is read again.
const unreadInterval = time.Second

func newCancelWatch(kv jetstream.KeyValue, log *slog.Logger) *cancelWatch {
	return &cancelWatch{kv: kv, log: log, subs: map[string]map[*func()]bool{}, unread: map[string]bool{}}
}

// unsure tells the watch that the flag of runID, subscribed, could not be
// read: a flag set before the subscription is in no update, so the watch
// reads it until it can.
func (w *cancelWatch) unsure(runID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unread[runID] = true
}

// subscribe calls fn when the cancel flag of runID is set, until
// unsubscribe is called. fn may be called more than once. A flag set
// before subscribe is not reported: the caller reads it after subscribing.
func (w *cancelWatch) subscribe(runID string, fn func()) (unsubscribe func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := &fn
	if w.subs[runID] == nil {
		w.subs[runID] = map[*func()]bool{}
	}
	w.subs[runID][key] = true
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.subs[runID], key)
		if len(w.subs[runID]) == 0 {
			delete(w.subs, runID)
			delete(w.unread, runID)
		}
	}
}

func (w *cancelWatch) notify(runID string) {
	w.mu.Lock()
	fns := make([]func(), 0, len(w.subs[runID]))
	for fn := range w.subs[runID] {
		fns = append(fns, *fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Run watches the bucket until ctx ends. A watch that fails or ends is
// started again with backoff; each time a watch starts, the flag of every
// subscribed run is read, so that a flag set while no watch ran is not
// missed.
func (w *cancelWatch) Run(ctx context.Context) {
	for fails := 0; ; {
		kw, err := w.kv.WatchAll(ctx, jetstream.UpdatesOnly())
		if err == nil {
			// A flag set before the watch began is in no update.
			w.recheck(ctx)
			fails = 0
			err = w.consume(ctx, kw)
			_ = kw.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		fails++
		d := watchBackoff(fails)
		w.log.Warn("cannot watch cancel flags; a cancel will not reach a running run until the watch is back", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (w *cancelWatch) consume(ctx context.Context, kw jetstream.KeyWatcher) error {
	tick := time.NewTicker(unreadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			w.read(ctx, w.unreadIDs())
		case entry, ok := <-kw.Updates():
			switch {
			case !ok:
				return errors.New("the watch ended")
			case entry != nil && entry.Operation() == jetstream.KeyValuePut:
				w.notify(entry.Key())
			}
		}
	}
}

// recheck reads the flag of every subscribed run.
func (w *cancelWatch) recheck(ctx context.Context) {
	w.mu.Lock()
	ids := make([]string, 0, len(w.subs))
	for id := range w.subs {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	w.read(ctx, ids)
}

// unreadIDs returns the runs whose flag could not be read.
func (w *cancelWatch) unreadIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.unread))
	for id := range w.unread {
		ids = append(ids, id)
	}
	return ids
}

// read reads the flags of ids and reports those set; a flag that cannot
// be read is read again later (unread).
func (w *cancelWatch) read(ctx context.Context, ids []string) {
	for _, id := range ids {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := w.kv.Get(gctx, id)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			w.log.Warn("cannot read a cancel flag; reading it again", "run_id", id, "err", err, "retry_in", unreadInterval)
			w.mu.Lock()
			if w.subs[id] != nil {
				w.unread[id] = true
			}
			w.mu.Unlock()
			continue
		}
		w.mu.Lock()
		delete(w.unread, id)
		w.mu.Unlock()
		if err == nil {
			w.notify(id)
		}
	}
}

// watchBackoff is the delay before watch try n+1: 0.5s, 1s, 2s, … 10s.
func watchBackoff(n int) time.Duration {
	return min(250*time.Millisecond<<min(n, 10), 10*time.Second)
}
