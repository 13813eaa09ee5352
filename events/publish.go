package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/models"
)

// Publisher publishes payloads, each with a Nats-Msg-Id so that a repeat
// within the duplicate window is stored once.
type Publisher struct {
	js    jetstream.Publisher
	names Names
}

// NewPublisher returns a Publisher on js for the streams of names.
func NewPublisher(js jetstream.Publisher, names Names) *Publisher {
	return &Publisher{js: js, names: names}
}

// Publish sends data to subject with msgID and waits for the stream's ack.
func (p *Publisher) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	_, err := p.PublishDedup(ctx, subject, msgID, data)
	return err
}

// HeaderRoom is what a message's headers (Nats-Msg-Id and the like) may
// take of the connection's max_payload, which counts headers and payload
// together: a payload must fit in max_payload less this.
const HeaderRoom = 4 << 10

// Refused reports whether a publish failed for the message itself (too
// large for the connection or the stream), so that trying it again cannot
// succeed.
func Refused(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

// PublishTryTimeout bounds the wait for one publish's ack, whatever the
// caller's deadline: a message sent to a server that died before it
// answered is never acknowledged, and its sender would otherwise wait out
// a deadline meant for retries (an executor reporting an outcome waits up
// to WES_EXECUTOR_REPORT_TIMEOUT), sending nothing again meanwhile. The
// message id makes the next try harmless.
const PublishTryTimeout = 5 * time.Second

// PublishDedup is Publish that also reports whether the stream already had
// a message with that id (and so dropped this one).
func (p *Publisher) PublishDedup(ctx context.Context, subject, msgID string, data []byte) (duplicate bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, PublishTryTimeout)
	defer cancel()
	ack, err := p.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
	if err != nil {
		return false, fmt.Errorf("publish %s (%s): %w", subject, msgID, err)
	}
	return ack.Duplicate, nil
}

// PublishOutbox publishes msgs without waiting between them, then waits
// for every ack (or ctx). The i-th error is msgs[i]'s; nil means the stream
// stored it. Errors do not stop the others: each message stands alone.
func (p *Publisher) PublishOutbox(ctx context.Context, msgs []models.OutboxMessage) []error {
	errs := make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Payload}, jetstream.WithMsgID(m.MsgID))
		if err != nil {
			errs[i] = fmt.Errorf("publish %s (%s): %w", m.Subject, m.MsgID, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = fmt.Errorf("publish %s (%s): %w", msgs[i].Subject, msgs[i].MsgID, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("publish %s (%s): %w", msgs[i].Subject, msgs[i].MsgID, ctx.Err())
		}
	}
	return errs
}

// PublishEvent publishes a run event on the run's subject.
func (p *Publisher) PublishEvent(ctx context.Context, ev RunEvent) error {
	subject, msgID, data, err := p.EncodeEvent(ev)
	if err != nil {
		return err
	}
	return p.Publish(ctx, subject, msgID, data)
}

// EncodeEvent returns the subject, message id and payload of ev, for a
// caller that stores it (in an outbox) before publishing.
func (p *Publisher) EncodeEvent(ev RunEvent) (subject, msgID string, data []byte, err error) {
	ev.V = Version
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	data, err = json.Marshal(ev)
	if err != nil {
		return "", "", nil, fmt.Errorf("encode event: %w", err)
	}
	return p.names.EventSubject(ev.RunID), ev.MsgID(), data, nil
}

// EncodeSubmitted returns the subject, message id and payload that queue a
// run for its engine.
func (p *Publisher) EncodeSubmitted(m RunSubmitted) (subject, msgID string, data []byte, err error) {
	m.V = Version
	data, err = json.Marshal(m)
	if err != nil {
		return "", "", nil, fmt.Errorf("encode run.submitted: %w", err)
	}
	return p.names.SubmitSubject(m.Engine, m.RunID), m.RunID, data, nil
}
