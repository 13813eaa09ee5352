// Package alerting notifies people when runs fail: it follows run events
// with a durable consumer of its own (so it never slows the projector) and
// posts an alert for each run that reaches one of the chosen states to a
// generic JSON webhook and/or a Slack-compatible webhook, with retries.
// Delivery is at least once.
//
// It knows events and HTTP (as a client); it must not know the database.
package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// Config chooses what is alerted and where.
type Config struct {
	// WebhookURL receives a JSON Alert.
	WebhookURL string
	// SlackURL receives {"text": …} (Slack incoming webhooks and the many
	// chat tools that accept the same).
	SlackURL string
	// States that raise an alert (default EXECUTOR_ERROR, SYSTEM_ERROR).
	States []models.State
	// Tags, when set, keep runs that carry every key:value given.
	Tags map[string]string
	// RunURL turns a run id into a link for people.
	RunURL func(runID string) string
	// CallbackAllow lists the URL prefixes a run may ask its state changes
	// to be posted to (tag wes.callback_url); empty: no callbacks.
	CallbackAllow []string
	// Attempts per delivery before the event is handed back to JetStream
	// for a later try.
	Attempts int
	// AckWait is how long JetStream waits for an event's ack before it
	// delivers it again (default 2 minutes); waiting events are kept alive
	// meanwhile.
	AckWait time.Duration
}

// Alert is what the generic webhook receives.
type Alert struct {
	RunID    string            `json:"run_id"`
	State    string            `json:"state"`
	Time     time.Time         `json:"time"`
	Workflow string            `json:"workflow_url,omitempty"`
	Type     string            `json:"workflow_type,omitempty"`
	Engine   string            `json:"workflow_engine,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	Error    string            `json:"error,omitempty"`
	ExitCode *int              `json:"exit_code,omitempty"`
	URL      string            `json:"url,omitempty"`
}

// Alerter delivers alerts.
type Alerter struct {
	cfg  Config
	bus  *events.Bus
	http *http.Client
	log  *slog.Logger
	sent *prometheus.CounterVec

	mu sync.Mutex
	// reached holds, by the stream sequence of an event whose delivery is
	// tried again, the sinks it reached: a later try posts to the others
	// only, so that one failing sink does not repeat the alert elsewhere.
	reached map[uint64]map[string]bool
}

// Delivery bounds.
const (
	// alertWorkers is how many events are delivered at once (of different
	// runs), so that a slow sink (a run's callback) does not hold up
	// everyone's alerts.
	alertWorkers = 8
	// maxDeliver is how many times JetStream delivers an event.
	maxDeliver = 20
	// maxAckPending bounds the events delivered and not yet acknowledged.
	maxAckPending = 64
)

// waitingEvents are the events delivered and not yet done with (waiting
// for their worker, or in its hands), by stream sequence.
type waitingEvents struct {
	mu   sync.Mutex
	msgs map[uint64]jetstream.Msg
}

// add keeps msg as the event at seq, and reports whether it is new (not
// waiting already).
func (w *waitingEvents) add(seq uint64, msg jetstream.Msg) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, had := w.msgs[seq]
	w.msgs[seq] = msg
	return !had
}

// get returns the event at seq.
func (w *waitingEvents) get(seq uint64) jetstream.Msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgs[seq]
}

// done forgets the event at seq.
func (w *waitingEvents) done(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.msgs, seq)
}

// inProgress tells JetStream that every waiting event is in hand.
func (w *waitingEvents) inProgress() {
	w.mu.Lock()
	msgs := make([]jetstream.Msg, 0, len(w.msgs))
	for _, m := range w.msgs {
		msgs = append(msgs, m)
	}
	w.mu.Unlock()
	for _, m := range msgs {
		_ = m.InProgress()
	}
}

// ConsumerName is the alerter's durable consumer on the events stream.
const ConsumerName = "alerts"

// New returns an alerter; call Run to start it.
func New(cfg Config, bus *events.Bus, reg prometheus.Registerer, log *slog.Logger) *Alerter {
	if len(cfg.States) == 0 {
		cfg.States = []models.State{models.ExecutorError, models.SystemError}
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 4
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 2 * time.Minute
	}
	if cfg.RunURL == nil {
		cfg.RunURL = func(string) string { return "" }
	}
	if log == nil {
		log = slog.Default()
	}
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wes_alerts_total", Help: "Alert deliveries by sink and result (sent, failed).",
	}, []string{"sink", "result"})
	reg.MustRegister(sent)
	// A redirect is not followed: it could take a callback, whose URL a
	// caller names, past the operator's allow-list (a 307 re-posts the
	// body anywhere). It counts as a failed delivery.
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	return &Alerter{cfg: cfg, bus: bus, http: client, log: log.With("component", "alerting"), sent: sent, reached: map[uint64]map[string]bool{}}
}

// Run delivers alerts until ctx ends.
func (a *Alerter) Run(ctx context.Context) error {
	if a.cfg.WebhookURL == "" && a.cfg.SlackURL == "" && len(a.cfg.CallbackAllow) == 0 {
		return nil
	}
	// Events go to alertWorkers workers by run: a run's callbacks are
	// posted in order, while a slow one holds up only the runs that share
	// its worker.
	//
	// An event waiting for its worker (behind a sink that times out, say),
	// or in its hands, is kept alive with InProgress: past AckWait
	// JetStream would deliver it again, to be posted twice, and each
	// delivery counts towards maxDeliver. A delivery of an event already
	// there is not queued again. At most maxAckPending events are
	// delivered and not acknowledged, so a worker's queue never fills.
	var wg sync.WaitGroup
	waiting := &waitingEvents{msgs: map[uint64]jetstream.Msg{}}
	work := make([]chan uint64, alertWorkers)
	for i := range work {
		work[i] = make(chan uint64, maxAckPending)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range work[i] {
				if msg := waiting.get(seq); msg != nil {
					a.handle(ctx, msg)
				}
				waiting.done(seq)
			}
		}()
	}
	stopBeating := make(chan struct{})
	beaten := make(chan struct{})
	go func() {
		defer close(beaten)
		t := time.NewTicker(a.cfg.AckWait / 4)
		defer t.Stop()
		for {
			select {
			case <-stopBeating:
				return
			case <-t.C:
				waiting.inProgress()
			}
		}
	}()
	err := events.Consume(ctx, a.bus.JS, a.bus.Names.EventsStream(), jetstream.ConsumerConfig{
		Durable:     ConsumerName,
		Description: "posts alerts for failed runs",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     a.cfg.AckWait,
		// Only what happens from now on: a new alerter does not replay
		// the whole history at its operators.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		MaxDeliver:    maxDeliver,
		MaxAckPending: maxAckPending,
	}, func(msg jetstream.Msg) {
		meta, err := msg.Metadata()
		if err != nil {
			_ = events.DeadLetter(ctx, a.bus, msg, "no metadata: "+err.Error())
			return
		}
		if !waiting.add(meta.Sequence.Stream, msg) {
			return // waiting already: this delivery replaces that one
		}
		h := fnv.New32a()
		h.Write([]byte(msg.Subject())) // one subject a run
		work[h.Sum32()%alertWorkers] <- meta.Sequence.Stream
	})
	for _, w := range work {
		close(w)
	}
	wg.Wait()
	close(stopBeating)
	<-beaten
	return err
}

func (a *Alerter) handle(ctx context.Context, msg jetstream.Msg) {
	ev, err := events.DecodeRunEvent(msg.Data())
	if err != nil {
		_ = events.DeadLetter(ctx, a.bus, msg, "undecodable: "+err.Error())
		return
	}
	alert := Alert{RunID: ev.RunID, State: string(ev.State), Time: ev.Time, Error: ev.Error, ExitCode: ev.ExitCode, URL: a.cfg.RunURL(ev.RunID)}
	if w := ev.Workflow; w != nil {
		alert.Workflow, alert.Type, alert.Engine, alert.Tags = w.URL, w.Type+" "+w.Version, w.Engine, w.Tags
	}
	var sinks []sink
	if a.wanted(ev) {
		sinks = a.sinks(alert)
	}
	if cb := a.callback(ev); cb != "" {
		body, _ := json.Marshal(alert)
		sinks = append(sinks, sink{"callback", cb, body})
	}
	if len(sinks) == 0 {
		_ = msg.Ack()
		return
	}
	log := a.log.With("run_id", ev.RunID, "state", ev.State)
	meta, err := msg.Metadata()
	if err != nil {
		_ = events.DeadLetter(ctx, a.bus, msg, "no metadata: "+err.Error())
		return
	}
	key := meta.Sequence.Stream
	if a.dropped(ctx, ev, key, log) {
		_ = msg.Ack()
		return
	}
	failed := a.deliverAll(ctx, key, sinks, msg.InProgress)
	if failed != nil {
		if meta.NumDelivered >= maxDeliver {
			a.forget(key)
			log.Error("alert given up", "err", failed, "deliveries", meta.NumDelivered)
			_ = msg.Term()
			return
		}
		delay := min(time.Duration(meta.NumDelivered)*30*time.Second, 10*time.Minute)
		log.Warn("alert not delivered, will retry", "err", failed, "retry_in", delay)
		_ = msg.NakWithDelay(delay)
		return
	}
	a.forget(key)
	log.Info("alert sent", "sinks", len(sinks))
	_ = msg.Ack()
}

// dropped reports whether the projector drops ev, stored at stream
// sequence seq: an outcome of an attempt that another took over (an
// executor that lost its lease reports after its successor began), or a
// state after the run ended. Such an event raises no alert and reaches no
// callback: the run goes on, or ended otherwise. If the run's events
// cannot be read, ev is taken as it comes: a needless alert rather than a
// missing one.
func (a *Alerter) dropped(ctx context.Context, ev events.RunEvent, seq uint64, log *slog.Logger) bool {
	prior, err := events.History(ctx, a.bus, ev.RunID, seq)
	if err != nil {
		log.Warn("cannot read the run's events to tell whether this one counts; alerting on it", "err", err)
		return false
	}
	// Only what shows the event superseded counts: a later attempt, or an
	// end, before it. A history whose start has expired (a run older
	// than the events' retention) may not replay to the state the
	// database holds, and must not silence a real failure.
	state, attempt := events.Replay(prior)
	if state.Terminal() || (ev.Attempt > 0 && ev.Attempt < attempt) {
		log.Info("no alert: the projector drops this event", "attempt", ev.Attempt, "run_state", state, "run_attempt", attempt)
		return true
	}
	return false
}

// deliverAll posts to each sink the event at stream sequence key has not
// reached yet, telling JetStream the event is in progress before each
// (inProgress: a sink may take a while), and returns what failed.
func (a *Alerter) deliverAll(ctx context.Context, key uint64, sinks []sink, inProgress func() error) error {
	var failed error
	for _, sink := range sinks {
		a.mu.Lock()
		done := a.reached[key][sink.name]
		a.mu.Unlock()
		if done {
			continue
		}
		_ = inProgress()
		if err := a.deliver(ctx, sink.url, sink.body); err != nil {
			a.sent.WithLabelValues(sink.name, "failed").Inc()
			failed = errors.Join(failed, fmt.Errorf("%s: %w", sink.name, err))
			continue
		}
		a.sent.WithLabelValues(sink.name, "sent").Inc()
		a.mu.Lock()
		if a.reached[key] == nil {
			a.reached[key] = map[string]bool{}
		}
		a.reached[key][sink.name] = true
		a.mu.Unlock()
	}
	return failed
}

// forget drops what deliverAll recorded of the event at key.
func (a *Alerter) forget(key uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.reached, key)
}

// callback returns the URL the run asked its state changes to be posted
// to, if the operator allows it.
func (a *Alerter) callback(ev events.RunEvent) string {
	if ev.State == "" || ev.Workflow == nil {
		return ""
	}
	cb := ev.Workflow.Tags[events.CallbackTag]
	if cb == "" || !events.CallbackAllowed(cb, a.cfg.CallbackAllow) {
		return ""
	}
	return cb
}

// wanted reports whether ev is a final state that raises an alert.
func (a *Alerter) wanted(ev events.RunEvent) bool {
	if ev.State == "" || !slices.Contains(a.cfg.States, ev.State) {
		return false
	}
	for k, v := range a.cfg.Tags {
		if ev.Workflow == nil || ev.Workflow.Tags[k] != v {
			return false
		}
	}
	return true
}

type sink struct {
	name, url string
	body      []byte
}

func (a *Alerter) sinks(alert Alert) []sink {
	var out []sink
	if a.cfg.WebhookURL != "" {
		body, _ := json.Marshal(alert)
		out = append(out, sink{"webhook", a.cfg.WebhookURL, body})
	}
	if a.cfg.SlackURL != "" {
		body, _ := json.Marshal(map[string]string{"text": slackText(alert)})
		out = append(out, sink{"slack", a.cfg.SlackURL, body})
	}
	return out
}

func slackText(al Alert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "WES run %s ended %s", al.RunID, al.State)
	if al.Workflow != "" {
		fmt.Fprintf(&b, ": %s (%s)", al.Workflow, al.Type)
	}
	if al.ExitCode != nil {
		fmt.Fprintf(&b, ", exit code %d", *al.ExitCode)
	}
	if al.Error != "" {
		fmt.Fprintf(&b, "\n%s", al.Error)
	}
	if al.URL != "" {
		fmt.Fprintf(&b, "\n%s", al.URL)
	}
	return b.String()
}

// deliver posts body, retrying with exponential backoff.
func (a *Alerter) deliver(ctx context.Context, url string, body []byte) error {
	var err error
	delay := 500 * time.Millisecond
	for i := range a.cfg.Attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
			delay *= 2
		}
		if err = a.post(ctx, url, body); err == nil {
			return nil
		}
	}
	return err
}

func (a *Alerter) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
