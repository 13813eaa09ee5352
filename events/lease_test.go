package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
)

// One holder at a time: a second is refused while the first renews; a
// release frees the lease at once, and a lease its holder stops renewing
// ends with the bucket's TTL.
func TestLeaseHasOneHolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus, _ := eventstest.Bus(t, "LEASE", events.Config{})
	a, b := events.NewLease(bus, "projector", "a"), events.NewLease(bus, "projector", "b")

	require.True(t, a.Hold(ctx), "a free lease is taken")
	require.False(t, b.Hold(ctx), "a held lease is not")
	require.True(t, a.Hold(ctx), "its holder renews it")
	require.False(t, b.Hold(ctx))
	other := events.NewLease(bus, "reconciler", "b")
	require.True(t, other.Hold(ctx), "leases of other keys are apart")

	a.Release()
	require.True(t, b.Hold(ctx), "a released lease is free at once")
	require.False(t, a.Hold(ctx), "and its former holder is refused")

	// A holder that stops renewing loses the lease after the TTL.
	kv, err := bus.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "LEASE_TTL_TEST", TTL: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.JS.DeleteKeyValue(context.Background(), "LEASE_TTL_TEST") })
	short := *bus
	short.Leases = kv
	gone, next := events.NewLease(&short, "projector", "gone"), events.NewLease(&short, "projector", "next")
	require.True(t, gone.Hold(ctx))
	require.False(t, next.Hold(ctx))
	require.Eventually(t, func() bool { return next.Hold(ctx) }, 10*time.Second, 100*time.Millisecond, "the lease did not expire")
	require.False(t, gone.Hold(ctx), "an expired holder does not take the lease back from the next")
}
