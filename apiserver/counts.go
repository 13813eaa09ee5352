package apiserver

import (
	"context"
	"sync"
	"time"

	"github.com/wes-dev/wes/models"
)

// stateCounts keeps the run counts by state of each owner for a while,
// when counting takes long, so that callers of service-info (public, asked
// often) cannot keep the database counting a large table: a count that
// took longer than slowCount is kept for keepFor times as long (a count
// of a million runs, 0.4 s, for 4 s), and a quick one not at all (the
// counts stay exact where they cost nothing). One count per owner runs at
// a time; those who ask meanwhile wait for it.
type stateCounts struct {
	slow    time.Duration // slowCount, or another in tests

	mu      sync.Mutex
	byOwner map[string]countsAt
}

type countsAt struct {
	counts map[models.State]int64
	at     time.Time     // when counted
	keep   time.Duration // how long they hold
	ready  chan struct{} // closed once counts (or err) is set
	err    error
}

const (
	slowCount = 100 * time.Millisecond
	keepFor   = 10
)

// maxCountOwners bounds the owners whose counts are kept.
const maxCountOwners = 1024

func (c *stateCounts) get(ctx context.Context, owner string, count func(context.Context, string) (map[models.State]int64, error)) (map[models.State]int64, error) {
	c.mu.Lock()
	e, ok := c.byOwner[owner]
	if !ok || (e.err != nil || time.Since(e.at) >= e.keep) && isClosed(e.ready) {
		if len(c.byOwner) >= maxCountOwners {
			for o, old := range c.byOwner {
				if isClosed(old.ready) && time.Since(old.at) >= old.keep {
					delete(c.byOwner, o)
				}
			}
		}
		e = countsAt{at: time.Now(), ready: make(chan struct{})}
		c.byOwner[owner] = e
		c.mu.Unlock()
		start := time.Now()
		counts, err := count(context.WithoutCancel(ctx), owner)
		took := time.Since(start)
		c.mu.Lock()
		e.counts, e.err, e.at = counts, err, time.Now()
		if took > c.slow {
			e.keep = keepFor * took
		}
		c.byOwner[owner] = e
		close(e.ready)
		c.mu.Unlock()
		return counts, err
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	e = c.byOwner[owner]
	c.mu.Unlock()
	return e.counts, e.err
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
