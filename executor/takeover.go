package executor

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// How an attempt learns that another executor took its run over.
//
// JetStream gives a run to another executor when no heartbeat of the one
// running it reached it within AckWait (a NATS node restarting, its
// consumer electing a leader), while the first attempt runs on. The two
// must not both settle the message: JetStream takes an Ack of any delivery
// for one of the latest, so the first attempt, ending, would take the run
// from the queue under the attempt that now holds it, and were that one to
// die too no executor would ever get the run again. Nor should two engines
// run the workflow at once, writing the same logs and outputs.
//
// The attempt that took over announces itself with its INITIALIZING event,
// of a higher attempt number. The first attempt listens for it on the
// run's event subject (plain NATS, no JetStream consumer) and stops its
// engine when it comes; from then on it stores no log or output (they are
// the new attempt's to write) and leaves the message alone, whatever verb
// it was about to settle it with. Since a missed message would say
// nothing, it also reads the run's events once more before it settles.
// Both only once half of AckWait has passed since the delivery: before
// AckWait no other executor can have the run, and most runs of a busy
// service end sooner, at no cost.
//
// The other way round, the attempt that took over may find, once its
// INITIALIZING is in the stream, that the first attempt's outcome got there
// before it: the run is over, and it stops before its engine starts (see
// execute).

var (
	// errTakenOver stops an attempt whose run another attempt took over.
	errTakenOver = errors.New("another executor took the run over")
	// errEnded stops an attempt whose run turns out to be over already.
	errEnded = errors.New("the run already ended")
)

// safeFor is how long after its delivery an attempt cannot have been taken
// over: half of AckWait, the margin covering the time the delivery took to
// get here.
func (a *attempt) safeFor() time.Duration { return a.e.cfg.AckWait / 2 }

// watchTakeover marks the attempt taken over, and cancels it with
// errTakenOver, when an attempt of the run with a higher number starts,
// until stop is called.
func (a *attempt) watchTakeover(cancel context.CancelCauseFunc) (stop func()) {
	var (
		mu      sync.Mutex
		sub     *nats.Subscription
		stopped bool
	)
	t := time.AfterFunc(a.safeFor(), func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		a.mu.Lock()
		log := a.log
		a.mu.Unlock()
		var err error
		sub, err = a.e.bus.JS.Conn().Subscribe(a.e.bus.Names.EventSubject(a.sub.RunID), func(m *nats.Msg) {
			ev, err := events.DecodeRunEvent(m.Data)
			if err != nil || ev.State != models.Initializing {
				return
			}
			a.mu.Lock()
			n, log := a.n, a.log
			a.mu.Unlock()
			if ev.Attempt > n && !a.takenOver.Swap(true) {
				log.Warn("another executor took the run over (no heartbeat reached JetStream within AckWait); stopping this attempt and leaving the run's message to it",
					"attempt_now", ev.Attempt, "executor_now", ev.Source)
				cancel(errTakenOver)
			}
		})
		if err != nil {
			log.Warn("cannot watch for another executor taking the run over; its events are read again before the outcome is settled", "err", err)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
}

// supersededBy returns the attempt that took the run over from this one,
// or 0 if none did, from the run's events: the last look before settling.
func (a *attempt) supersededBy(ctx context.Context) (int, error) {
	if time.Since(a.received) < a.safeFor() {
		return 0, nil
	}
	history, err := a.e.history(ctx, a.sub.RunID)
	if err != nil {
		return 0, err
	}
	if _, now := events.Replay(history); now > a.n {
		return now, nil
	}
	return 0, nil
}

// endedBefore returns the final state the run reached before this
// attempt's INITIALIZING got to the stream, or "". Only a delivery after
// the first looks: one that took the run over from an attempt whose
// outcome was stored just before.
func (a *attempt) endedBefore(ctx context.Context) models.State {
	if a.n == 1 {
		return ""
	}
	history, err := a.e.history(ctx, a.sub.RunID)
	if err != nil {
		a.log.Warn("cannot read the run's events to tell whether it already ended; running it", "err", err)
		return ""
	}
	if st, _ := events.Replay(history); st.Terminal() {
		return st
	}
	return ""
}
