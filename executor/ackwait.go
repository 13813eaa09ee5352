package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
)

// errAckWaitDiffers is returned by Run when this executor's AckWait is not
// the one the live executors of an engine share.
var errAckWaitDiffers = errors.New("the ack wait differs from the other executors' (WES_EXECUTOR_ACK_WAIT)")

// agreeAckWait checks, before the executor creates or updates an engine's
// consumer with its own AckWait, that it does not change the wait under
// executors that already pull from it. JetStream gives a run to another
// executor when no heartbeat came within the consumer's AckWait, and an
// executor heartbeats, and decides when a later delivery may have taken a
// run over, by its own: an executor that heartbeats less often than the
// consumer waits has its runs delivered twice while they run. So every
// executor of an engine must share one AckWait; it may change only while no
// other executor of the engine is listed in the registry.
//
// Two executors that start within the same moment with different waits are
// not told apart (neither is listed yet): the one that writes the consumer
// last sets the wait.
func (e *Executor) agreeAckWait(ctx context.Context, engine string) error {
	cons, err := e.bus.JS.Consumer(ctx, e.bus.Names.RunsStream(), e.bus.Names.ExecutorConsumer(engine))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the consumer of %s: %w", engine, err)
	}
	have := cons.CachedInfo().Config.AckWait
	if have == e.cfg.AckWait {
		return nil
	}
	others, err := e.othersServing(ctx, engine)
	if err != nil {
		return fmt.Errorf("list the executors of %s: %w", engine, err)
	}
	if len(others) > 0 {
		return fmt.Errorf("%w: executors %s run %s with an ack wait of %s and this one has %s; set WES_EXECUTOR_ACK_WAIT=%s here, or stop every executor of %s to change it (one that stopped without leaving the registry stays listed for its TTL)",
			errAckWaitDiffers, strings.Join(others, ", "), engine, have, e.cfg.AckWait, have, engine)
	}
	e.log.Warn("changing the ack wait of the engine's queue: no other executor of it is running", "engine", engine, "from", have, "to", e.cfg.AckWait)
	return nil
}

// othersServing lists the executors other than this one that the registry
// holds as running engine.
func (e *Executor) othersServing(ctx context.Context, engine string) ([]string, error) {
	w, err := e.bus.Executors.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var ids []string
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case entry := <-w.Updates():
			if entry == nil { // every entry has been delivered
				slices.Sort(ids)
				return ids, nil
			}
			var info events.ExecutorInfo
			if json.Unmarshal(entry.Value(), &info) != nil || info.ID == e.cfg.ID {
				continue
			}
			if slices.ContainsFunc(info.Engines, func(ei events.EngineInfo) bool { return ei.Name == engine }) {
				ids = append(ids, info.ID)
			}
		}
	}
}

// registryReadTimeout bounds agreeAckWait's reads of the consumer and of the
// registry.
const registryReadTimeout = 10 * time.Second
