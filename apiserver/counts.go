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
// a time; those who ask meanwhile wait for it and get its result.
type stateCounts struct {
	slow time.Duration // slowCount, or another in tests

	mu      sync.Mutex
	byOwner map[string]*countsAt
}

// countsAt is one count; its fields are set once, before ready is closed.
type countsAt struct {
	counts map[models.State]int64
	err    error
	at     time.Time     // when counted
	keep   time.Duration // how long it holds
	ready  chan struct{}
}

const (
	slowCount = 100 * time.Millisecond
	keepFor   = 10
	// maxCountOwners bounds the owners whose counts are kept.
	maxCountOwners = 1024
)

func (c *stateCounts) get(ctx context.Context, owner string, count func(context.Context, string) (map[models.State]int64, error)) (map[models.State]int64, error) {
	c.mu.Lock()
	e := c.byOwner[owner]
	if e == nil || isClosed(e.ready) && (e.err != nil || time.Since(e.at) >= e.keep) {
		c.evict()
		e = &countsAt{ready: make(chan struct{})}
		c.byOwner[owner] = e
		c.mu.Unlock()
		start := time.Now()
		e.counts, e.err = count(context.WithoutCancel(ctx), owner)
		e.at = time.Now()
		if took := e.at.Sub(start); took > c.slow {
			e.keep = keepFor * took
		}
		close(e.ready)
		return e.counts, e.err
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.counts, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// evict forgets the counts that no longer hold, once there are many.
// Called with mu held.
func (c *stateCounts) evict() {
	if len(c.byOwner) < maxCountOwners {
		return
	}
	for o, e := range c.byOwner {
		if isClosed(e.ready) && time.Since(e.at) >= e.keep {
			delete(c.byOwner, o)
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
