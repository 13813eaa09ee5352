package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// OutboxStore is what the relay needs of the run store.
type OutboxStore interface {
	PendingOutbox(ctx context.Context, limit int, before time.Time) ([]models.OutboxMessage, error)
	DeleteOutbox(ctx context.Context, seqs ...int64) error
	DropDelivered(ctx context.Context, before time.Time) (int64, error)
}

// Publisher publishes outbox messages, each with its message id, and
// reports per message whether the stream stored it; and run events.
type Publisher interface {
	PublishOutbox(ctx context.Context, msgs []models.OutboxMessage) []error
	PublishEvent(ctx context.Context, ev events.RunEvent) error
}

// Relay publishes committed outbox messages. What this process commits is
// handed over in memory (Deliver) and published at once, many messages per
// round trip; a sweep of the outbox table, every interval and when kicked,
// publishes whatever an earlier attempt left (NATS was down, the relay was
// behind, or a process died between commit and publish). A row is deleted
// only after JetStream acknowledged it; its Nats-Msg-Id makes a second
// publish, by this replica's sweep or another's, harmless.
type Relay struct {
	store    OutboxStore
	pub      Publisher
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}
	fresh    chan []models.OutboxMessage
	// published carries the seqs of acknowledged rows to the deleter.
	published chan []int64
	// deleteLinger is how long the deleter gathers rows before a delete
	// (relayDeleteLinger).
	deleteLinger time.Duration
}

const (
	relayBatch = 256
	// relayMinAge keeps the periodic sweep off rows that were committed a
	// moment ago and are being published from memory.
	relayMinAge = 2 * time.Second
	// relayPublishTimeout bounds one batch's wait for acks, and one delete.
	relayPublishTimeout = 5 * time.Second
	// relayDeleteBatch caps the rows one delete removes; relayDeleteQueue
	// is how many published batches may wait for the deleter before
	// publishing waits for it.
	relayDeleteBatch = 4096
	relayDeleteQueue = 64
	// relayDeleteLinger is how long the deleter gathers published rows
	// before it deletes them: from tens of submissions a second (ten rows
	// at 100/s), one delete (a transaction) then covers many instead of
	// one each. It is far below relayMinAge, so that the periodic sweep
	// does not publish them again (a Kick's sweep may: deduplicated).
	relayDeleteLinger = 100 * time.Millisecond
)

// NewRelay returns a relay that sweeps every interval.
func NewRelay(store OutboxStore, pub Publisher, interval time.Duration, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.Default()
	}
	return &Relay{
		store: store, pub: pub, interval: interval, log: log.With("component", "relay"),
		kick: make(chan struct{}, 1), fresh: make(chan []models.OutboxMessage, 1024),
		published: make(chan []int64, relayDeleteQueue), deleteLinger: relayDeleteLinger,
	}
}

// Kick asks for a sweep of the whole outbox now; it never blocks.
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Deliver hands over messages that were just committed to the outbox (with
// their Seq), to be published at once. It never blocks: when the relay is
// behind, the messages are left to a sweep.
func (r *Relay) Deliver(msgs ...models.OutboxMessage) {
	if len(msgs) == 0 {
		return
	}
	select {
	case r.fresh <- msgs:
	default:
		r.Kick()
	}
}

// Run relays until ctx ends; the rows it published by then are deleted
// before it returns. A relay runs once.
func (r *Relay) Run(ctx context.Context) error {
	deleted := make(chan struct{})
	go func() {
		defer close(deleted)
		r.deleteLoop(context.WithoutCancel(ctx))
	}()
	defer func() {
		close(r.published)
		<-deleted
	}()
	t := time.NewTicker(r.interval)
	defer t.Stop()
	r.sweep(ctx, time.Now(), time.Now()) // what an earlier process left
	for {
		select {
		case <-ctx.Done():
			return nil
		case msgs := <-r.fresh:
			batch := append([]models.OutboxMessage(nil), msgs...)
		gather:
			for len(batch) < relayBatch {
				select {
				case more := <-r.fresh:
					batch = append(batch, more...)
				default:
					break gather
				}
			}
			r.publish(ctx, batch)
		case <-r.kick:
			r.sweep(ctx, time.Now(), time.Now().Add(-relayMinAge))
		case <-t.C:
			r.sweep(ctx, time.Now().Add(-relayMinAge), time.Now().Add(-relayMinAge))
		}
	}
}

// sweep publishes outbox rows created before cutoff, oldest first, until
// none is left or a batch had failures (NATS is likely down; the next
// sweep tries again). First it drops the rows created before dropBefore
// whose runs were delivered already.
func (r *Relay) sweep(ctx context.Context, cutoff, dropBefore time.Time) {
	// Rows whose runs have moved on were published, and must not be again:
	// past the stream's duplicate window that would run them again. While
	// this process publishes, only rows older than relayMinAge, which the
	// deleter has had its chance at (so that the two deletes do not meet
	// on the same rows).
	if n, err := r.store.DropDelivered(ctx, dropBefore); err != nil && ctx.Err() == nil {
		r.log.Warn("cannot drop the outbox rows of delivered runs; publishing them (deduplicated within the stream's window)", "err", err)
	} else if n > 0 {
		r.log.Info("dropped the outbox rows of runs delivered already", "rows", n)
	}
	for ctx.Err() == nil {
		msgs, err := r.store.PendingOutbox(ctx, relayBatch, cutoff)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("cannot read outbox", "err", err)
			}
			return
		}
		if len(msgs) == 0 {
			return
		}
		if failed := r.publish(ctx, msgs); failed > 0 || len(msgs) < relayBatch {
			return
		}
	}
}

// publish publishes msgs, hands the rows of those JetStream stored to the
// deleter and returns how many failed; those stay in the outbox.
func (r *Relay) publish(ctx context.Context, msgs []models.OutboxMessage) (failed int) {
	pctx, cancel := context.WithTimeout(ctx, relayPublishTimeout)
	errs := r.pub.PublishOutbox(pctx, msgs)
	cancel()
	done := make([]int64, 0, len(msgs))
	for i, err := range errs {
		if err == nil {
			done = append(done, msgs[i].Seq)
			continue
		}
		if events.Refused(err) {
			serr := r.settleRefused(ctx, msgs[i], err)
			if serr == nil {
				done = append(done, msgs[i].Seq)
				continue
			}
			err = serr
		}
		failed++
		if failed <= 3 { // enough to see why, without a line per message while NATS is down
			r.log.Warn("cannot publish outbox message, will retry", "run_id", runIDOf(msgs[i]),
				"msg_id", msgs[i].MsgID, "subject", msgs[i].Subject, "err", err)
		}
	}
	if failed > 3 {
		r.log.Warn("outbox messages left for the next sweep", "failed", failed, "of", len(msgs))
	}
	if len(done) > 0 {
		r.published <- done
	}
	return failed
}

// settleRefused disposes of a message the broker refuses for good, which
// would otherwise be tried at every sweep for ever (and hold up the rows
// behind it): one too large for it, its max_payload lowered since the run
// was accepted. A submission can then never be queued: its run ends
// SYSTEM_ERROR, saying why. A run event (the API's are small) is dropped.
func (r *Relay) settleRefused(ctx context.Context, m models.OutboxMessage, cause error) error {
	r.log.Error("NATS refuses an outbox message for good; it is dropped", "run_id", runIDOf(m),
		"subject", m.Subject, "bytes", len(m.Payload), "err", cause)
	if isEvent(m) {
		return nil
	}
	ectx, cancel := context.WithTimeout(ctx, relayPublishTimeout)
	defer cancel()
	return r.pub.PublishEvent(ectx, events.RunEvent{
		RunID: m.MsgID, State: models.SystemError, Source: events.SourceAPI,
		SystemLog: fmt.Sprintf("the run cannot be queued: NATS refuses its queue message of %d bytes (%v)", len(m.Payload), cause),
	})
}

// deleteLoop deletes the rows publish hands over, those that come within
// deleteLinger of the first in one statement, until published is closed
// and drained. ctx outlives Run's, so that what was published before
// shutdown is deleted; each delete has its own timeout.
func (r *Relay) deleteLoop(ctx context.Context) {
	for seqs := range r.published {
		linger := time.NewTimer(r.deleteLinger)
	gather:
		for len(seqs) < relayDeleteBatch {
			select {
			case more, ok := <-r.published:
				if !ok {
					break gather
				}
				seqs = append(seqs, more...)
			case <-linger.C:
				break gather
			}
		}
		linger.Stop()
		dctx, cancel := context.WithTimeout(ctx, relayPublishTimeout)
		err := r.store.DeleteOutbox(dctx, seqs...)
		cancel()
		if err != nil {
			r.log.Warn("cannot delete published outbox messages; they will be published again (deduplicated)", "rows", len(seqs), "err", err)
		}
	}
}

// runIDOf names the run an outbox message is about: a run.submitted
// message's id is the run id; a run event's subject ends with it.
func runIDOf(m models.OutboxMessage) string {
	if isEvent(m) {
		return m.Subject[strings.LastIndex(m.Subject, eventsToken)+len(eventsToken):]
	}
	return m.MsgID
}

// eventsToken is in the subject of every run event (wes.events.<run id>).
const eventsToken = ".events."

// isEvent reports whether m is a run event, not a run.submitted message.
func isEvent(m models.OutboxMessage) bool { return strings.Contains(m.Subject, eventsToken) }
