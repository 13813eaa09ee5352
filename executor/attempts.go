package executor

import (
	"context"
	"fmt"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// How deliveries become attempts.
//
// JetStream's NumDelivered counts every delivery of a run: attempts that
// failed and were retried (NakWithDelay), attempts that crashed or lost
// their connection (AckWait ran out), and hand-backs, when an executor that
// shuts down gives the run back (Nak). A redelivered message is the
// original one, with no trace of how its last delivery ended, so JetStream
// alone cannot tell a hand-back from a crash.
//
// The run's events can. An attempt that started said so (INITIALIZING); an
// executor that hands a run back says so with a PREEMPTED event of that
// delivery. So the attempts a delivery counts against WES_MAX_ATTEMPTS are
// the earlier deliveries that started and were not handed back, and this
// one. PREEMPTED events of the API's reconciler do not count as hand-backs:
// it reports executors that stopped answering, which is what a crash looks
// like. A hand-back whose PREEMPTED event was lost (NATS down at shutdown,
// or the reconciler's event about the same delivery got there first and
// took its message id) counts as an attempt: the error is on the side of
// trying less. A delivery that never started is no attempt: one that an
// attempt still running took over (see Executor.claim; a NATS node
// restarting can cause it, and it must not cost a run that retries its
// failures its last try), or one whose executor died before it said
// anything (the bound on deliveries below catches a loop of those).
//
// Since MaxDeliver is unlimited (a run must not be silently dropped by
// JetStream, leaving it QUEUED for ever), the executor bounds deliveries
// itself: a delivery beyond WES_MAX_ATTEMPTS attempts, or beyond
// WES_MAX_ATTEMPTS + MaxHandBacks deliveries in all, is terminated and the
// run reported SYSTEM_ERROR with the reason. The second bound catches runs
// handed back over and over, and crash loops whose history could not be
// read.

// overLimit returns why delivery n of a run, attempt tries, must not be
// tried, given the hand-backs before it (known reports whether the run's
// history could be read), or "" if it may be tried.
func overLimit(n, tries, handBacks int, known bool, maxAttempts, maxHandBacks int) string {
	switch {
	case n > maxAttempts+maxHandBacks:
		return fmt.Sprintf("the run was delivered %d times (%d of them handed back by executors that shut down), more than WES_MAX_ATTEMPTS (%d) plus %d hand-backs allow; giving up",
			n, handBacks, maxAttempts, maxHandBacks)
	case known && tries > maxAttempts:
		return fmt.Sprintf("attempt %d would exceed WES_MAX_ATTEMPTS (%d): earlier attempts ended without reporting an outcome (the executor running them crashed or lost its connection to NATS); giving up",
			tries, maxAttempts)
	}
	return ""
}

// handBacks counts the deliveries before delivery n that an executor
// handed back: those it reported PREEMPTED.
func handBacks(history []events.RunEvent, n int) int {
	return len(handedBack(history, n))
}

func handedBack(history []events.RunEvent, n int) map[int]bool {
	seen := map[int]bool{}
	for _, ev := range history {
		if ev.State == models.Preempted && ev.Source != events.SourceAPI && ev.Attempt >= 1 && ev.Attempt < n {
			seen[ev.Attempt] = true
		}
	}
	return seen
}

// triesAt returns the attempt that delivery n of a run is: the earlier
// deliveries that started (their INITIALIZING is in history) and were not
// handed back, and this one.
func triesAt(history []events.RunEvent, n int) int {
	back := handedBack(history, n)
	started := map[int]bool{}
	for _, ev := range history {
		if ev.State == models.Initializing && ev.Attempt >= 1 && ev.Attempt < n && !back[ev.Attempt] {
			started[ev.Attempt] = true
		}
	}
	return len(started) + 1
}

// lastAttempt returns the highest attempt number in history, and whether
// the INITIALIZING event of attempt n in it is mine (published at that
// time by this executor) rather than another delivery's.
func lastAttempt(history []events.RunEvent, n int, mine events.RunEvent) (last int, own bool) {
	for _, ev := range history {
		last = max(last, ev.Attempt)
		if ev.Attempt == n && ev.State == models.Initializing && ev.Source == mine.Source && ev.Time.Equal(mine.Time) {
			own = true
		}
	}
	return last, own
}

// history reads the events of run runID. It gives up after a few seconds
// (NATS electing a leader, say): the run waits meanwhile, and its callers
// can do without.
func (e *Executor) history(ctx context.Context, runID string) ([]events.RunEvent, error) {
	return events.History(ctx, e.bus, runID, 0)
}
