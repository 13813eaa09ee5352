package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// Bounds on what an engine can put in one event. A command line or a task
// name of megabytes is a mistake or an attack; either way it must not keep
// the run's state from being recorded.
const (
	maxNameBytes   = 1 << 10  // a task's name or id
	maxCmdBytes    = 8 << 10  // a command line, its arguments together
	maxLogBytes    = 16 << 10 // a system log line, an error message
	maxTaskLogs    = 20       // system log lines of one task update
	shortLogBytes  = 1 << 10  // a log line of an event cut to the bone
	outputsNoteKey = "wes_note"
)

// errUnencodable marks an event that cannot be encoded: no retry helps.
var errUnencodable = errors.New("event cannot be encoded")

// tooLarge reports whether err is NATS or JetStream refusing a message for
// its size.
func tooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

// permanent reports whether publishing again cannot help.
func permanent(err error) bool {
	return tooLarge(err) || errors.Is(err, errUnencodable)
}

// truncate cuts s to at most n bytes, on a rune boundary, saying how much
// it cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 32 // room for the suffix
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	cut = max(cut, 0)
	return s[:cut] + fmt.Sprintf("… [%d bytes cut]", len(s)-cut)
}

// truncateArgs keeps an argument vector under n bytes in all, cutting the
// argument that crosses the bound and dropping the ones after it.
func truncateArgs(args []string, n int) []string {
	total := 0
	for _, a := range args {
		total += len(a)
	}
	if total <= n {
		return args
	}
	var out []string
	used := 0
	for i, a := range args {
		if used+len(a) <= n {
			out = append(out, a)
			used += len(a)
			continue
		}
		rest := len(args) - i
		if room := n - used; room > 64 {
			out = append(out, truncate(a, room))
			rest--
		}
		if rest > 0 {
			out = append(out, fmt.Sprintf("… [%d more arguments cut]", rest))
		}
		break
	}
	return out
}

// bound cuts what an engine controls in ev (its command, task names and
// commands, log lines) to the bounds above. It changes no slice of ev's in
// place.
func bound(ev events.RunEvent) events.RunEvent {
	ev.Cmd = truncateArgs(ev.Cmd, maxCmdBytes)
	ev.SystemLog = truncate(ev.SystemLog, maxLogBytes)
	ev.Error = truncate(ev.Error, maxLogBytes)
	if len(ev.Tasks) > 0 {
		tasks := make([]models.TaskLog, len(ev.Tasks))
		for i, t := range ev.Tasks {
			t.ID = truncate(t.ID, maxNameBytes)
			t.Name = truncate(t.Name, maxNameBytes)
			t.Cmd = truncateArgs(t.Cmd, maxCmdBytes)
			t.Stdout = truncate(t.Stdout, maxNameBytes)
			t.Stderr = truncate(t.Stderr, maxNameBytes)
			t.TESURI = truncate(t.TESURI, maxNameBytes)
			if len(t.SystemLogs) > maxTaskLogs {
				t.SystemLogs = append(t.SystemLogs[:maxTaskLogs:maxTaskLogs], fmt.Sprintf("… [%d more lines cut]", len(t.SystemLogs)-maxTaskLogs))
			}
			logs := make([]string, len(t.SystemLogs))
			for j, l := range t.SystemLogs {
				logs[j] = truncate(l, maxLogBytes)
			}
			t.SystemLogs = logs
			tasks[i] = t
		}
		ev.Tasks = tasks
	}
	return ev
}

// withoutOutputs replaces ev's outputs with a note that says why and where
// the output files are.
func withoutOutputs(ev events.RunEvent, why, where string) events.RunEvent {
	msg := fmt.Sprintf("the outputs object was left out: %s; %s", why, where)
	ev.Outputs, _ = json.Marshal(map[string]string{outputsNoteKey: msg})
	ev.SystemLog = joinLogs(ev.SystemLog, msg)
	return ev
}

// fit returns ev bounded, and without its outputs (a note instead) if they
// are not valid JSON or if, with them, the encoded event would be over limit
// bytes. size is the encoded size of an event.
func fit(ev events.RunEvent, limit int, where string, size func(events.RunEvent) (int, error)) events.RunEvent {
	ev = bound(ev)
	if len(ev.Outputs) == 0 {
		return ev
	}
	if !json.Valid(ev.Outputs) {
		return withoutOutputs(ev, "the engine's outputs are not valid JSON", where)
	}
	if n, err := size(ev); err == nil && limit > 0 && n > limit {
		return withoutOutputs(ev, fmt.Sprintf("with it the event would take %d bytes, more than the %d bytes a message may carry", n, limit), where)
	}
	return ev
}

// shrink returns ev cut to the bone, for a server that refused it for its
// size: no tasks, no command, no outputs, short logs.
func shrink(ev events.RunEvent, why, where string) events.RunEvent {
	ev.Tasks, ev.Cmd = nil, nil
	if len(ev.Outputs) > 0 {
		ev = withoutOutputs(ev, why, where)
	}
	ev.SystemLog = truncate(ev.SystemLog, shortLogBytes)
	ev.Error = truncate(ev.Error, shortLogBytes)
	return ev
}

// joinLogs joins the non-empty system log lines of one event.
func joinLogs(lines ...string) string {
	var keep []string
	for _, l := range lines {
		if l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}

// eventLimit is how many bytes an event may take: the connection's
// max_payload less room for headers, or MaxEventBytes if smaller.
func (e *Executor) eventLimit() int {
	limit := e.cfg.MaxEventBytes
	if mp := int(e.bus.JS.Conn().MaxPayload()); mp > events.HeaderRoom && (limit <= 0 || limit > mp-events.HeaderRoom) {
		limit = mp - events.HeaderRoom
	}
	return limit
}

// outputsWhere says where the output files of the run are when its outputs
// object cannot be reported.
func (a *attempt) outputsWhere() string {
	if a.e.cfg.LocalOutputLocations {
		return fmt.Sprintf("the output files stay in the run directory on executor %s", a.e.cfg.ID)
	}
	return "the output files are kept in the object store (GET /runs/" + a.sub.RunID + "/outputs lists them)"
}

// publish reports an event of this attempt. It bounds the event (see fit),
// then publishes it until JetStream has it, ctx ends, or the error is
// permanent (the message id makes a repeat harmless). A state change the
// server refuses for its size goes once more, cut to the bone (shrink).
func (a *attempt) publish(ctx context.Context, ev events.RunEvent) error {
	_, err := a.publishDedup(ctx, ev)
	return err
}

// publishDedup is publish that also reports whether the stream already had
// an event with the same message id (and so dropped this one).
func (a *attempt) publishDedup(ctx context.Context, ev events.RunEvent) (duplicate bool, err error) {
	ev.RunID, ev.Attempt, ev.Source = a.sub.RunID, a.n, a.e.cfg.ID
	if ev.State != "" {
		ev.Workflow = events.Ref(a.sub.Request, a.sub.Engine)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	size := func(ev events.RunEvent) (int, error) {
		_, _, data, err := a.e.pub.EncodeEvent(ev)
		return len(data), err
	}
	ev = fit(ev, a.e.eventLimit(), a.outputsWhere(), size)
	duplicate, err = a.send(ctx, ev)
	if err == nil || !tooLarge(err) || ev.State == "" {
		return duplicate, err
	}
	a.log.Warn("event refused for its size; sending it without its details", "state", ev.State, "err", err)
	return a.send(ctx, shrink(ev, fmt.Sprintf("NATS refused the event for its size (%v)", err), a.outputsWhere()))
}

// send publishes ev, retrying all but permanent errors until ctx ends. It
// reports whether the stream already had an event with ev's message id.
func (a *attempt) send(ctx context.Context, ev events.RunEvent) (duplicate bool, err error) {
	subject, msgID, data, err := a.e.pub.EncodeEvent(ev)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errUnencodable, err)
	}
	delay := 100 * time.Millisecond
	for {
		duplicate, err := a.e.pub.PublishDedup(ctx, subject, msgID, data)
		if err == nil {
			return duplicate, nil
		}
		if permanent(err) {
			a.log.Error("event refused", "state", ev.State, "bytes", len(data), "err", err)
			return false, err
		}
		a.log.Warn("cannot publish event, retrying", "state", ev.State, "err", err)
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
