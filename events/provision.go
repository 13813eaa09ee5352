package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config sizes the JetStream resources.
type Config struct {
	// Replicas of every stream, KV bucket and object store (1, or 3 on a
	// NATS cluster).
	Replicas int
	// ExecutorTTL is how long an executor stays listed without a heartbeat.
	ExecutorTTL time.Duration
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id.
	DuplicateWindow time.Duration
	// EventRetention is how long run events stay in WES_EVENTS.
	EventRetention time.Duration
	// ObjectRetention is how long attachments, logs and outputs stay in
	// the object store (0: for ever). An object replaced (a growing log)
	// counts from its last version: a GrowingObject is stored whole again
	// before its oldest chunks are half this old, and at its last copy,
	// so that its chunks expire with its info.
	ObjectRetention time.Duration
	// Owner makes this process's settings the namespace's: it updates
	// the streams and buckets that exist to them. Other processes create
	// what is missing and leave what exists as it is, so that one started
	// with other settings (an executor without WES_EVENT_RETENTION or
	// WES_NATS_REPLICAS) changes nothing.
	Owner bool
}

// Bus holds the JetStream resources of one namespace.
type Bus struct {
	JS        jetstream.JetStream
	Names     Names
	Cancel    jetstream.KeyValue
	Executors jetstream.KeyValue
	Objects   jetstream.ObjectStore
	Leases    jetstream.KeyValue

	// objectsStream is the stream under Objects, for purging the chunks
	// of replaced objects without looking it up each time, and for its
	// MaxAge (objectsMaxAge), read again from the server when maxAgeRead
	// (Unix nanoseconds) is older than maxAgeRefresh.
	objectsStream jetstream.Stream
	maxAgeRead    *atomic.Int64 // shared by copies of the Bus
}

// ensure returns the resource get finds, or the one create makes (one
// another process made meanwhile, if create fails), or, for an owner, the
// one createOrUpdate makes or brings to its config.
func ensure[T any](owner bool, createOrUpdate, get, create func() (T, error)) (T, error) {
	if owner {
		return createOrUpdate()
	}
	if v, err := get(); err == nil {
		return v, nil
	}
	v, err := create()
	if err != nil {
		if existing, gerr := get(); gerr == nil {
			return existing, nil
		}
	}
	return v, err
}

// Provision creates the streams, KV buckets and object store of names, and
// for an owner (cfg.Owner) updates those that exist. It is idempotent:
// every process calls it at start-up.
func Provision(ctx context.Context, js jetstream.JetStream, names Names, cfg Config) (*Bus, error) {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = time.Hour
	}
	if cfg.ExecutorTTL <= 0 {
		cfg.ExecutorTTL = 30 * time.Second
	}
	streams := []jetstream.StreamConfig{{
		Name:        names.RunsStream(),
		Description: "submitted runs, a subject per engine and run; executors pull them",
		Subjects:    []string{names.runsSubjects()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
	}, {
		Name:        names.EventsStream(),
		Description: "history of run events; the projector and watchers read it",
		Subjects:    []string{names.eventsSubjects()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.EventRetention,
	}, {
		Name:        names.DeadLetterStream(),
		Description: "messages no consumer could use, with the reason (header Wes-Dead-Reason)",
		Subjects:    []string{names.prefix + ".deadletter.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      30 * 24 * time.Hour,
	}}
	for _, sc := range streams {
		if _, err := ensure(cfg.Owner,
			func() (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, sc) },
			func() (jetstream.Stream, error) { return js.Stream(ctx, sc.Name) },
			func() (jetstream.Stream, error) { return js.CreateStream(ctx, sc) }); err != nil {
			return nil, fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
	}
	kv := func(kc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
		return ensure(cfg.Owner,
			func() (jetstream.KeyValue, error) { return js.CreateOrUpdateKeyValue(ctx, kc) },
			func() (jetstream.KeyValue, error) { return js.KeyValue(ctx, kc.Bucket) },
			func() (jetstream.KeyValue, error) { return js.CreateKeyValue(ctx, kc) })
	}
	b := &Bus{JS: js, Names: names}
	var err error
	if b.Cancel, err = kv(jetstream.KeyValueConfig{
		Bucket:      names.CancelBucket(),
		Description: "cancel flags by run id",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("create KV %s: %w", names.CancelBucket(), err)
	}
	if b.Executors, err = kv(jetstream.KeyValueConfig{
		Bucket:      names.ExecutorsBucket(),
		Description: "live executors and the engines they run",
		TTL:         cfg.ExecutorTTL,
		Storage:     jetstream.MemoryStorage,
		Replicas:    cfg.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("create KV %s: %w", names.ExecutorsBucket(), err)
	}
	if b.Leases, err = kv(jetstream.KeyValueConfig{
		Bucket:      names.LeasesBucket(),
		Description: "leases of singleton jobs (the reconciler)",
		TTL:         LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("create KV %s: %w", names.LeasesBucket(), err)
	}
	oc := jetstream.ObjectStoreConfig{
		Bucket:      names.ObjectsBucket(),
		Description: "run attachments, logs and outputs",
		TTL:         cfg.ObjectRetention,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}
	if b.Objects, err = ensure(cfg.Owner,
		func() (jetstream.ObjectStore, error) { return js.CreateOrUpdateObjectStore(ctx, oc) },
		func() (jetstream.ObjectStore, error) { return js.ObjectStore(ctx, oc.Bucket) },
		func() (jetstream.ObjectStore, error) { return js.CreateObjectStore(ctx, oc) }); err != nil {
		return nil, fmt.Errorf("create object store %s: %w", names.ObjectsBucket(), err)
	}
	if b.objectsStream, err = js.Stream(ctx, "OBJ_"+names.ObjectsBucket()); err != nil {
		return nil, fmt.Errorf("object store %s: %w", names.ObjectsBucket(), err)
	}
	b.maxAgeRead = new(atomic.Int64)
	b.maxAgeRead.Store(time.Now().UnixNano()) // js.Stream read its info
	return b, nil
}

// ProvisionWithRetry calls Provision until it succeeds or ctx ends, so that
// a process can start before NATS does. onRetry hears each failure.
func ProvisionWithRetry(ctx context.Context, js jetstream.JetStream, names Names, cfg Config, onRetry func(error)) (*Bus, error) {
	delay := 200 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		b, err := Provision(attemptCtx, js, names, cfg)
		cancel()
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, errors.Join(ctx.Err(), err)
		}
		if onRetry != nil {
			onRetry(err)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// Consume creates (or updates) the durable consumer cfg on stream and hands
// each message to handle until ctx ends; then it drains: no new message is
// taken and the one being handled finishes.
func Consume(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, handle func(jetstream.Msg)) error {
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	cc, err := cons.Consume(handle)
	if err != nil {
		return fmt.Errorf("consume %s: %w", cfg.Durable, err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// DeadLetter moves a message no consumer can use to the dead-letter stream,
// with the reason and where it came from in headers, and terminates it so
// that it never blocks its consumer again. If the dead-letter publish fails
// the message is terminated all the same (and the error returned). It uses
// Term, not TermWithReason: servers before 2.10 ignore the latter and would
// redeliver the message for ever.
func DeadLetter(ctx context.Context, b *Bus, msg jetstream.Msg, reason string) error {
	return errors.Join(PublishDeadLetter(ctx, b, msg, reason), msg.Term())
}

// PublishDeadLetter copies msg to the dead-letter stream with the reason
// and where it came from in headers. Publishing the same message again is
// harmless: its message id makes JetStream keep one copy.
func PublishDeadLetter(ctx context.Context, b *Bus, msg jetstream.Msg, reason string) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("dead-letter: %w", err)
	}
	dead := nats.NewMsg(b.Names.DeadLetterSubject(meta.Stream))
	dead.Data = msg.Data()
	dead.Header.Set("Wes-Dead-Reason", reason)
	dead.Header.Set("Wes-Dead-Subject", msg.Subject())
	dead.Header.Set("Wes-Dead-Stream-Seq", strconv.FormatUint(meta.Sequence.Stream, 10))
	dead.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%d", meta.Stream, meta.Sequence.Stream))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.JS.PublishMsg(pctx, dead); err != nil {
		return fmt.Errorf("dead-letter %s seq %d: %w", meta.Stream, meta.Sequence.Stream, err)
	}
	return nil
}
