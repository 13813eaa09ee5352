package events

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseTTL ends a lease its holder stopped renewing (the leases bucket's
// TTL); a holder renews it at least every LeaseTTL/3.
const LeaseTTL = 30 * time.Second

// Lease makes one process at a time, among many, the holder of a job (the
// projector, the reconciler). It lives in the leases bucket, whose TTL ends
// a lease its holder stopped renewing. Not safe for concurrent use.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	rev    uint64
}

// NewLease returns the lease key of bus's leases bucket, for holder.
func NewLease(bus *Bus, key, holder string) *Lease {
	return &Lease{kv: bus.Leases, key: key, holder: holder}
}

// Hold takes the lease if it is free, or renews it if this process holds
// it, and reports whether this process holds it now. Call it well within
// LeaseTTL.
func (l *Lease) Hold(ctx context.Context) bool {
	var (
		rev uint64
		err error
	)
	if l.rev == 0 {
		rev, err = l.kv.Create(ctx, l.key, []byte(l.holder))
	} else {
		rev, err = l.kv.Update(ctx, l.key, []byte(l.holder), l.rev)
	}
	if err != nil {
		// The server said no (taken, or renewed by another): forget it. A
		// lost connection keeps the revision, so that the lease is renewed
		// as soon as NATS is back rather than after it expires.
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrKeyExists) {
			l.rev = 0
		}
		return false
	}
	l.rev = rev
	return true
}

// Release gives the lease up, if held, so that another process need not
// wait for it to expire.
func (l *Lease) Release() {
	if l.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
	l.rev = 0
}
