package apiserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wes-dev/wes/models"
)

// runCreator stores new runs with their outbox messages, all or none.
type runCreator interface {
	CreateRuns(ctx context.Context, runs []*models.Run, outbox []*models.OutboxMessage) error
}

// groupCommit stores concurrent submissions in shared transactions: a
// submission that arrives while others are being committed waits for the
// next commit, which takes every submission waiting then (up to maxBatch).
// One commit — one WAL flush — thus serves many requests, and under load
// the submit rate is bound by rows, not by commits. A lone submission is
// committed at once, as before.
//
// A batch that fails is tried again one submission at a time, so that one
// run the database refuses fails alone. What commits is handed to the relay
// in one delivery.
type groupCommit struct {
	store       runCreator
	deliver     func(...models.OutboxMessage)
	maxBatch    int
	maxFlushers int
	timeout     time.Duration

	mu       sync.Mutex
	pending  []*pendingRun
	flushers int
}

type pendingRun struct {
	run  *models.Run
	msg  *models.OutboxMessage
	done chan error
}

// create stores run and msg and returns once they are committed or have
// failed. It waits for the outcome even when ctx ends, because the run may
// be in a commit already; the commit itself is bounded by timeout.
func (g *groupCommit) create(run *models.Run, msg *models.OutboxMessage) error {
	s := &pendingRun{run: run, msg: msg, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, s)
	if g.flushers < g.maxFlushers {
		g.flushers++
		go g.flush()
	}
	g.mu.Unlock()
	return <-s.done
}

// flush commits waiting submissions until none is left.
func (g *groupCommit) flush() {
	for {
		g.mu.Lock()
		n := min(len(g.pending), g.maxBatch)
		if n == 0 {
			g.flushers--
			g.mu.Unlock()
			return
		}
		batch := g.pending[:n:n]
		g.pending = append([]*pendingRun(nil), g.pending[n:]...)
		g.mu.Unlock()
		g.commit(batch)
	}
}

func (g *groupCommit) commit(batch []*pendingRun) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	runs := make([]*models.Run, len(batch))
	msgs := make([]*models.OutboxMessage, len(batch))
	for i, s := range batch {
		runs[i], msgs[i] = s.run, s.msg
	}
	err := g.store.CreateRuns(ctx, runs, msgs)
	if err == nil {
		g.finish(batch)
		return
	}
	if len(batch) == 1 || errors.Is(err, models.ErrUnavailable) || ctx.Err() != nil {
		for _, s := range batch {
			s.done <- err
		}
		return
	}
	// Someone's run was refused: find whose, by committing each alone.
	var ok []*pendingRun
	for _, s := range batch {
		if err := g.store.CreateRuns(ctx, []*models.Run{s.run}, []*models.OutboxMessage{s.msg}); err != nil {
			s.done <- fmt.Errorf("store run: %w", err)
			continue
		}
		ok = append(ok, s)
	}
	g.finish(ok)
}

// finish hands what committed to the relay, then answers the requests.
func (g *groupCommit) finish(batch []*pendingRun) {
	if len(batch) == 0 {
		return
	}
	msgs := make([]models.OutboxMessage, len(batch))
	for i, s := range batch {
		msgs[i] = *s.msg
	}
	g.deliver(msgs...)
	for _, s := range batch {
		s.done <- nil
	}
}
