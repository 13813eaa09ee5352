//go:build faults

package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/projector"
)

// streamEvent is one message of the events stream, decoded if it could be.
type streamEvent struct {
	seq uint64
	ev  events.RunEvent
	err error // undecodable: the projector dead-letters it
}

// readEvents reads the whole events stream, in stream order.
func readEvents(ctx context.Context, js jetstream.JetStream, stream string) ([]streamEvent, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	if last == 0 {
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []streamEvent
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			ev, err := events.DecodeRunEvent(m.Data())
			out = append(out, streamEvent{seq: meta.Sequence.Stream, ev: ev, err: err})
			if meta.Sequence.Stream >= last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("events stream: read %d messages, up to sequence %d expected", len(out), last)
		}
	}
}

// tries is how many deliveries count as attempts against WES_MAX_ATTEMPTS:
// those that started (INITIALIZING) and were not handed back.
func (r *replayed) tries() int {
	n := 0
	for attempt := range r.starts {
		if !r.handBacks[attempt] {
			n++
		}
	}
	return n
}

// replayed is a run as the events stream says it must be: every event of
// the run pushed, in stream order, through the projector's own Apply.
type replayed struct {
	run models.Run
	// applied lists the state changes applied, in order.
	applied []models.State
	// terminals is how many terminal states were applied.
	terminals int
	// changedAfterTerminal counts state changes applied after a terminal one.
	changedAfterTerminal int
	// reported lists the distinct terminal states any event reported.
	reported []models.State
	dropped  int
	// attempts is the highest attempt (delivery) of any event.
	attempts int
	// handBacks are the deliveries an executor handed back (PREEMPTED by
	// the executor itself, at shutdown): they do not count as attempts.
	handBacks map[int]bool
	// starts are the INITIALIZING events, by attempt.
	starts map[int]stateAt
	// states are the state events in stream order (applied or not).
	states []stateEvent
}

type stateAt struct {
	at     time.Time
	source string
}

type stateEvent struct {
	events.RunEvent
	applied bool
}

// replay computes what the database must hold for each run.
func replay(evs []streamEvent) map[string]*replayed {
	runs := map[string]*replayed{}
	for _, se := range evs {
		if se.err != nil {
			continue
		}
		ev := se.ev
		r, ok := runs[ev.RunID]
		if !ok {
			r = &replayed{run: models.Run{ID: ev.RunID, State: models.Queued}, starts: map[int]stateAt{}, handBacks: map[int]bool{}}
			runs[ev.RunID] = r
		}
		r.attempts = max(r.attempts, ev.Attempt)
		if ev.State.Terminal() && !slices.Contains(r.reported, ev.State) {
			r.reported = append(r.reported, ev.State)
		}
		if ev.State == models.Preempted && ev.Source != events.SourceAPI {
			r.handBacks[ev.Attempt] = true
		}
		if ev.State == models.Initializing {
			if _, seen := r.starts[ev.Attempt]; !seen {
				r.starts[ev.Attempt] = stateAt{at: ev.Time, source: ev.Source}
			}
		}
		before := r.run.State
		wasTerminal := before.Terminal()
		_, err := projector.Apply(&r.run, ev, se.seq)
		if ev.State != "" {
			r.states = append(r.states, stateEvent{RunEvent: ev, applied: err == nil})
		}
		if err != nil {
			r.dropped++
			continue
		}
		if ev.State != "" {
			r.applied = append(r.applied, ev.State)
			if wasTerminal {
				r.changedAfterTerminal++
			}
			if ev.State.Terminal() {
				r.terminals++
			}
		}
	}
	return runs
}

// sameRow lists where the database row differs from the replay.
func sameRow(db *models.Run, want models.Run) []string {
	var diffs []string
	add := func(field string, got, want any) {
		diffs = append(diffs, fmt.Sprintf("%s: db %v, events %v", field, got, want))
	}
	if db.State != want.State {
		add("state", db.State, want.State)
	}
	if db.Attempt != want.Attempt {
		add("attempt", db.Attempt, want.Attempt)
	}
	if db.LastEventSeq != want.LastEventSeq {
		add("last_event_seq", db.LastEventSeq, want.LastEventSeq)
	}
	if db.Executor != want.Executor {
		add("executor", db.Executor, want.Executor)
	}
	if fmt.Sprint(deref(db.ExitCode)) != fmt.Sprint(deref(want.ExitCode)) {
		add("exit_code", deref(db.ExitCode), deref(want.ExitCode))
	}
	if !slices.Equal(db.Cmd, want.Cmd) {
		add("cmd", db.Cmd, want.Cmd)
	}
	if !slices.Equal(db.SystemLogs, want.SystemLogs) {
		add("system_logs", len(db.SystemLogs), len(want.SystemLogs))
	}
	if db.ErrorMessage != want.ErrorMessage {
		add("error_message", db.ErrorMessage, want.ErrorMessage)
	}
	if !sameTime(db.StartTime, want.StartTime) || !sameTime(db.EndTime, want.EndTime) {
		add("start/end", fmt.Sprint(db.StartTime, db.EndTime), fmt.Sprint(want.StartTime, want.EndTime))
	}
	return diffs
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Sub(*b).Abs() < time.Millisecond
}

// metricsScraper keeps the last scrape of every incarnation of every API
// process, so that counters of a process killed later still count.
type metricsScraper struct {
	mu   sync.Mutex
	last map[string]map[string]float64 // "api-1#2" → series → value
}

func (m *metricsScraper) scrape(key, url string) {
	body, err := httpGet(url)
	if err != nil {
		return
	}
	series := parseMetrics(string(body))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		m.last = map[string]map[string]float64{}
	}
	m.last[key] = series
}

// sum adds up a series over every incarnation of every process.
func (m *metricsScraper) sum(series string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var total float64
	for _, s := range m.last {
		total += s[series]
	}
	return total
}

// parseMetrics reads the Prometheus text format into series → value.
func parseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// table is a two-column report, printed aligned.
type table struct {
	rows [][3]string // check, result, verdict
}

func (tb *table) add(check, verdict, format string, args ...any) {
	tb.rows = append(tb.rows, [3]string{check, fmt.Sprintf(format, args...), verdict})
}

func (tb *table) String() string {
	header := [3]string{"check", "result", "verdict"}
	w := [3]int{len(header[0]), len(header[1]), len(header[2])}
	for _, r := range tb.rows {
		for i := range r {
			w[i] = max(w[i], len(r[i]))
		}
	}
	var b strings.Builder
	line := func(r [3]string) {
		fmt.Fprintf(&b, "| %-*s | %-*s | %-*s |\n", w[0], r[0], w[1], r[1], w[2], r[2])
	}
	line(header)
	fmt.Fprintf(&b, "|%s|%s|%s|\n", strings.Repeat("-", w[0]+2), strings.Repeat("-", w[1]+2), strings.Repeat("-", w[2]+2))
	for _, r := range tb.rows {
		line(r)
	}
	return b.String()
}

// verdict is "ok" or "FAIL".
func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAIL"
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// firstN formats up to n items of s.
func firstN(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, "; ")
	}
	return strings.Join(s[:n], "; ") + fmt.Sprintf("; … (%d more)", len(s)-n)
}
