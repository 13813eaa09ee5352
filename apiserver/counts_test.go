package apiserver

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
)

// service-info's state counts are counted once per owner however many ask
// at once; a slow count is kept ten times as long as it took, and a quick
// one not at all.
func TestSlowStateCountsAreKept(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	count := func(_ context.Context, owner string) (map[models.State]int64, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // a count of a large table
		return map[models.State]int64{models.Complete: int64(len(owner))}, nil
	}
	c := &stateCounts{slow: 20 * time.Millisecond, byOwner: map[string]*countsAt{}}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			got, err := c.get(context.Background(), "alice", count)
			require.NoError(t, err)
			require.EqualValues(t, 5, got[models.Complete])
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, calls.Load(), "twenty callers at once, one count")
	got, err := c.get(context.Background(), "bob", count)
	require.NoError(t, err)
	require.EqualValues(t, 3, got[models.Complete])
	require.EqualValues(t, 2, calls.Load(), "each owner has their own")
	_, err = c.get(context.Background(), "alice", count)
	require.NoError(t, err)
	require.EqualValues(t, 2, calls.Load(), "a slow count (50 ms) is kept")
	time.Sleep(550 * time.Millisecond)
	_, err = c.get(context.Background(), "alice", count)
	require.NoError(t, err)
	require.EqualValues(t, 3, calls.Load(), "for ten times as long as it took")

	quick := &stateCounts{slow: time.Second, byOwner: map[string]*countsAt{}}
	for range 3 {
		_, err = quick.get(context.Background(), "alice", count)
		require.NoError(t, err)
	}
	require.EqualValues(t, 6, calls.Load(), "a quick count is not kept: the counts stay exact")
}

// A caller who waits for another's count gets that count, however quick it
// was (and however soon a newer caller starts the next one).
func TestAStateCountWaiterGetsTheCount(t *testing.T) {
	t.Parallel()
	count := func(context.Context, string) (map[models.State]int64, error) {
		return map[models.State]int64{models.Complete: 1}, nil
	}
	c := &stateCounts{slow: slowCount, byOwner: map[string]*countsAt{}}
	var nils atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5000 {
				if got, err := c.get(context.Background(), "alice", count); err == nil && got == nil {
					nils.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, nils.Load(), "calls that got no counts and no error")
}
