package executor

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// taskBuffer holds an attempt's task updates until they are sent: every
// LogInterval while the run goes on, and the rest with its final event. A
// short run thus sends no task event of its own, and a busy engine one per
// interval, however many updates it makes.
type taskBuffer struct {
	mu    sync.Mutex
	tasks []models.TaskLog // the last update of each task, in first-seen order
	index map[string]int
}

func (b *taskBuffer) add(t models.TaskLog) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i, ok := b.index[t.ID]; ok {
		b.tasks[i] = t
		return
	}
	if b.index == nil {
		b.index = map[string]int{}
	}
	b.index[t.ID] = len(b.tasks)
	b.tasks = append(b.tasks, t)
}

// putBack returns updates that could not be sent to the buffer, except
// those of a task with a newer update there already.
func (b *taskBuffer) putBack(tasks []models.TaskLog) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range tasks {
		if _, newer := b.index[t.ID]; newer {
			continue
		}
		if b.index == nil {
			b.index = map[string]int{}
		}
		b.index[t.ID] = len(b.tasks)
		b.tasks = append(b.tasks, t)
	}
}

// take returns the updates held and empties the buffer.
func (b *taskBuffer) take() []models.TaskLog {
	b.mu.Lock()
	defer b.mu.Unlock()
	tasks := b.tasks
	b.tasks, b.index = nil, nil
	return tasks
}

// sendTasks publishes the buffered task updates every LogInterval until
// stop is called; what is left then goes with the final event (finish).
func (a *attempt) sendTasks(ctx context.Context) (stop func()) {
	return every(ctx, a.e.cfg.LogInterval, func(ctx context.Context) {
		a.publishTasks(ctx, a.tasks.take())
	})
}

// publishTasks sends task updates in events of at most half a message
// each. The updates of an event that cannot be sent now go back to the
// buffer, for the next interval or the final event; those NATS refuses for
// their size are dropped, with a log line.
func (a *attempt) publishTasks(ctx context.Context, tasks []models.TaskLog) {
	limit := a.e.eventLimit() / 2
	for len(tasks) > 0 {
		n, size := 0, 0
		for n < len(tasks) {
			b, err := json.Marshal(tasks[n])
			if err == nil && n > 0 && size+len(b) > limit {
				break
			}
			size += len(b)
			n++
		}
		err := a.publish(ctx, events.RunEvent{Tasks: tasks[:n], Time: time.Now().UTC()})
		switch {
		case err == nil:
		case permanent(err):
			a.log.Warn("task updates refused by NATS; dropping them", "tasks", n, "err", err)
		default:
			a.tasks.putBack(tasks)
			return
		}
		tasks = tasks[n:]
	}
}

// withTasks adds the task updates still buffered to ev, the attempt's
// final event, when they fit comfortably; otherwise it sends them in an
// event of their own first.
func (a *attempt) withTasks(ctx context.Context, ev events.RunEvent) events.RunEvent {
	tasks := a.tasks.take()
	if len(tasks) == 0 {
		return ev
	}
	with := ev
	with.Tasks = append(append([]models.TaskLog(nil), ev.Tasks...), tasks...)
	with.RunID, with.Attempt, with.Source = a.sub.RunID, a.n, a.e.cfg.ID
	if _, _, data, err := a.e.pub.EncodeEvent(with); err == nil && len(data) <= a.e.eventLimit()/2 {
		ev.Tasks = with.Tasks
		return ev
	}
	a.publishTasks(ctx, tasks)
	return ev
}
