package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/models"
)

// History reads the events of run runID stored before stream sequence
// before (all of them if before is 0), oldest first. It gives up after a
// few seconds (NATS electing a leader, say).
func History(ctx context.Context, b *Bus, runID string, before uint64) ([]RunEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream := b.Names.EventsStream()
	cons, err := b.JS.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     b.Names.EventSubject(runID),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return nil, fmt.Errorf("read the run's events: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.JS.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	var evs []RunEvent
	for read := uint64(0); read < pending; {
		batch, err := cons.Fetch(int(min(pending-read, 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read the run's events: %w", err)
		}
		got, past := 0, false
		for msg := range batch.Messages() {
			got++
			if before > 0 {
				if meta, err := msg.Metadata(); err == nil && meta.Sequence.Stream >= before {
					past = true
					continue
				}
			}
			if ev, err := DecodeRunEvent(msg.Data()); err == nil {
				evs = append(evs, ev)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read the run's events: %w", err)
		}
		if got == 0 || past { // the rest expired meanwhile, or came after before
			break
		}
		read += uint64(got)
	}
	return evs, nil
}

// Replay returns the state and attempt the projector makes of a run's
// events, taken in stream order from a run QUEUED at attempt 0: the same
// transition table decides (see projector.Apply), so an event of an attempt
// that a later one superseded, or a state after a final one, changes
// nothing.
func Replay(history []RunEvent) (state models.State, attempt int) {
	state = models.Queued
	for _, ev := range history {
		if _, ok := applies(state, attempt, ev); ok {
			state, attempt = ev.State, max(attempt, attemptOf(ev, attempt))
		}
	}
	return state, attempt
}

// applies reports whether event ev changes a run in state at attempt, as
// the projector decides, and the attempt ev concerns.
func applies(state models.State, attempt int, ev RunEvent) (int, bool) {
	if ev.State == "" {
		return 0, false
	}
	n := attemptOf(ev, attempt)
	return n, models.ValidateAttemptTransition(state, attempt, ev.State, n) == nil
}

// attemptOf is the attempt ev concerns: the API's events (attempt 0)
// concern whatever attempt is current.
func attemptOf(ev RunEvent, current int) int {
	if ev.Attempt == 0 {
		return current
	}
	return ev.Attempt
}
