package apiserver

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/wes-dev/wes/models"
)

// OutboxStore is what the relay needs of the run store.
type OutboxStore interface {
	PendingOutbox(ctx context.Context, limit int) ([]models.OutboxMessage, error)
	DeleteOutbox(ctx context.Context, seqs ...int64) error
}

// Publisher publishes one message with its message id.
type Publisher interface {
	Publish(ctx context.Context, subject, msgID string, data []byte) error
}

// Relay publishes committed outbox messages: at once when kicked after a
// commit, and every interval for whatever an earlier attempt left (NATS was
// down, or the process died between commit and publish). A message is
// deleted only after JetStream acknowledged it; its Nats-Msg-Id makes a
// second publish by another replica harmless.
type Relay struct {
	store    OutboxStore
	pub      Publisher
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}
}

const relayBatch = 256

// NewRelay returns a relay that sweeps every interval.
func NewRelay(store OutboxStore, pub Publisher, interval time.Duration, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.Default()
	}
	return &Relay{store: store, pub: pub, interval: interval, log: log.With("component", "relay"), kick: make(chan struct{}, 1)}
}

// Kick asks for a publish pass now; it never blocks.
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.flush(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-t.C:
		}
	}
}

// flush publishes pending messages in order until none is left or one
// fails; what failed stays for the next pass.
func (r *Relay) flush(ctx context.Context) {
	for ctx.Err() == nil {
		msgs, err := r.store.PendingOutbox(ctx, relayBatch)
		if err != nil {
			r.log.Warn("cannot read outbox", "err", err)
			return
		}
		var done []int64
		for _, m := range msgs {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := r.pub.Publish(pctx, m.Subject, m.MsgID, m.Payload)
			cancel()
			if err != nil {
				r.log.Warn("cannot publish outbox message, will retry", "run_id", runIDOf(m), "msg_id", m.MsgID, "subject", m.Subject, "err", err)
				break
			}
			done = append(done, m.Seq)
		}
		if err := r.store.DeleteOutbox(ctx, done...); err != nil {
			r.log.Warn("cannot delete published outbox messages", "err", err)
			return
		}
		if len(done) < relayBatch {
			return
		}
	}
}

// runIDOf names the run an outbox message is about: a run.submitted
// message's id is the run id; a run event's subject ends with it.
func runIDOf(m models.OutboxMessage) string {
	if i := strings.LastIndex(m.Subject, ".events."); i >= 0 {
		return m.Subject[i+len(".events."):]
	}
	return m.MsgID
}
