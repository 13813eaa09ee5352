package alerting

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
	"github.com/wes-dev/wes/models"
)

// newAlerter builds an alerter without a bus: enough for everything but
// Run with a sink configured.
func newAlerter(t *testing.T, cfg Config) *Alerter {
	t.Helper()
	return New(cfg, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestRunWithoutSinksNeedsNoBus(t *testing.T) {
	t.Parallel()
	a := newAlerter(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, a.Run(ctx))
	require.NoError(t, ctx.Err(), "Run without sinks must return at once")
}

func TestWanted(t *testing.T) {
	t.Parallel()
	wf := func(tags map[string]string) *events.WorkflowRef {
		return &events.WorkflowRef{URL: "main.cwl", Type: "CWL", Version: "v1.2", Engine: "mock", Tags: tags}
	}
	tests := []struct {
		name string
		cfg  Config
		ev   events.RunEvent
		want bool
	}{
		{name: "default: executor error", ev: events.RunEvent{RunID: "r", State: models.ExecutorError}, want: true},
		{name: "default: system error", ev: events.RunEvent{RunID: "r", State: models.SystemError}, want: true},
		{name: "default: complete", ev: events.RunEvent{RunID: "r", State: models.Complete}},
		{name: "default: canceled", ev: events.RunEvent{RunID: "r", State: models.Canceled}},
		{name: "default: running", ev: events.RunEvent{RunID: "r", State: models.Running}},
		{name: "state-less task event", ev: events.RunEvent{RunID: "r"}},
		{
			name: "state-less event even when every state is chosen",
			cfg:  Config{States: models.States[:]},
			ev:   events.RunEvent{RunID: "r"},
		},
		{
			name: "chosen states: complete",
			cfg:  Config{States: []models.State{models.Complete, models.Canceled}},
			ev:   events.RunEvent{RunID: "r", State: models.Complete}, want: true,
		},
		{
			name: "chosen states replace the default",
			cfg:  Config{States: []models.State{models.Complete}},
			ev:   events.RunEvent{RunID: "r", State: models.ExecutorError},
		},
		{
			name: "tag matches",
			cfg:  Config{Tags: map[string]string{"team": "a"}},
			ev:   events.RunEvent{RunID: "r", State: models.SystemError, Workflow: wf(map[string]string{"team": "a", "other": "x"})}, want: true,
		},
		{
			name: "tag has another value",
			cfg:  Config{Tags: map[string]string{"team": "a"}},
			ev:   events.RunEvent{RunID: "r", State: models.SystemError, Workflow: wf(map[string]string{"team": "b"})},
		},
		{
			name: "tag missing",
			cfg:  Config{Tags: map[string]string{"team": "a"}},
			ev:   events.RunEvent{RunID: "r", State: models.SystemError, Workflow: wf(nil)},
		},
		{
			name: "tag filter without workflow",
			cfg:  Config{Tags: map[string]string{"team": "a"}},
			ev:   events.RunEvent{RunID: "r", State: models.SystemError},
		},
		{
			name: "every tag must match",
			cfg:  Config{Tags: map[string]string{"team": "a", "env": "prod"}},
			ev:   events.RunEvent{RunID: "r", State: models.SystemError, Workflow: wf(map[string]string{"team": "a", "env": "dev"})},
		},
		{
			name: "every tag matches",
			cfg:  Config{Tags: map[string]string{"team": "a", "env": "prod"}},
			ev:   events.RunEvent{RunID: "r", State: models.SystemError, Workflow: wf(map[string]string{"team": "a", "env": "prod"})}, want: true,
		},
		{
			name: "filter on an empty value needs the key with that value",
			cfg:  Config{Tags: map[string]string{"team": "a"}},
			ev:   events.RunEvent{RunID: "r", State: models.ExecutorError, Workflow: wf(map[string]string{"team": ""})},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, newAlerter(t, tt.cfg).wanted(tt.ev))
		})
	}
}

func TestSlackText(t *testing.T) {
	t.Parallel()
	code := 4
	tests := []struct {
		name  string
		alert Alert
		want  string
	}{
		{
			name:  "bare",
			alert: Alert{RunID: "r1", State: "SYSTEM_ERROR"},
			want:  "WES run r1 ended SYSTEM_ERROR",
		},
		{
			name:  "everything",
			alert: Alert{RunID: "r1", State: "EXECUTOR_ERROR", Workflow: "main.cwl", Type: "CWL v1.2", ExitCode: &code, Error: "boom", URL: "https://wes.example/runs/r1"},
			want:  "WES run r1 ended EXECUTOR_ERROR: main.cwl (CWL v1.2), exit code 4\nboom\nhttps://wes.example/runs/r1",
		},
		{
			name:  "error and link only",
			alert: Alert{RunID: "r2", State: "SYSTEM_ERROR", Error: "disk full", URL: "https://wes.example/runs/r2"},
			want:  "WES run r2 ended SYSTEM_ERROR\ndisk full\nhttps://wes.example/runs/r2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, slackText(tt.alert))
		})
	}
}

func TestSinks(t *testing.T) {
	t.Parallel()
	code := 3
	alert := Alert{
		RunID: "r1", State: "EXECUTOR_ERROR", Time: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		Workflow: "main.cwl", Type: "CWL v1.2", Engine: "cwltool", Tags: map[string]string{"team": "a"},
		Error: "boom", ExitCode: &code, URL: "https://wes.example/runs/r1",
	}
	wantWebhook := `{"run_id":"r1","state":"EXECUTOR_ERROR","time":"2024-05-06T07:08:09Z","workflow_url":"main.cwl",
		"workflow_type":"CWL v1.2","workflow_engine":"cwltool","tags":{"team":"a"},"error":"boom","exit_code":3,
		"url":"https://wes.example/runs/r1"}`
	wantSlack := `{"text":"WES run r1 ended EXECUTOR_ERROR: main.cwl (CWL v1.2), exit code 3\nboom\nhttps://wes.example/runs/r1"}`
	tests := []struct {
		name      string
		cfg       Config
		wantNames []string
		wantURLs  []string
		wantBody  []string
	}{
		{name: "none", cfg: Config{}},
		{
			name:      "webhook",
			cfg:       Config{WebhookURL: "http://hook.example/a"},
			wantNames: []string{"webhook"}, wantURLs: []string{"http://hook.example/a"}, wantBody: []string{wantWebhook},
		},
		{
			name:      "slack",
			cfg:       Config{SlackURL: "http://slack.example/b"},
			wantNames: []string{"slack"}, wantURLs: []string{"http://slack.example/b"}, wantBody: []string{wantSlack},
		},
		{
			name:      "both",
			cfg:       Config{WebhookURL: "http://hook.example/a", SlackURL: "http://slack.example/b"},
			wantNames: []string{"webhook", "slack"},
			wantURLs:  []string{"http://hook.example/a", "http://slack.example/b"},
			wantBody:  []string{wantWebhook, wantSlack},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sinks := newAlerter(t, tt.cfg).sinks(alert)
			require.Len(t, sinks, len(tt.wantNames))
			for i, s := range sinks {
				require.Equal(t, tt.wantNames[i], s.name)
				require.Equal(t, tt.wantURLs[i], s.url)
				require.JSONEq(t, tt.wantBody[i], string(s.body))
			}
		})
	}
}

func TestWebhookOmitsEmptyFields(t *testing.T) {
	t.Parallel()
	sinks := newAlerter(t, Config{WebhookURL: "http://hook.example"}).sinks(Alert{RunID: "r1", State: "SYSTEM_ERROR"})
	require.Len(t, sinks, 1)
	var got map[string]any
	require.NoError(t, json.Unmarshal(sinks[0].body, &got))
	require.Equal(t, map[string]any{"run_id": "r1", "state": "SYSTEM_ERROR", "time": "0001-01-01T00:00:00Z"}, got)
}

// flakyServer answers 500 to its first failures requests, then 204; it
// records what it received.
type flakyServer struct {
	*httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	bodies   []string
	types    []string
}

func newFlakyServer(t *testing.T, failures int32) *flakyServer {
	t.Helper()
	f := &flakyServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(body))
		f.types = append(f.types, r.Method+" "+r.Header.Get("Content-Type"))
		f.mu.Unlock()
		if n <= failures {
			http.Error(w, "not now", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(f.Close)
	return f
}

func TestDeliverRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		attempts     int
		failures     int32
		wantRequests int32
		wantErr      string
	}{
		{name: "first try", attempts: 4, failures: 0, wantRequests: 1},
		{name: "after one failure", attempts: 4, failures: 1, wantRequests: 2},
		{name: "after two failures", attempts: 3, failures: 2, wantRequests: 3},
		{name: "every attempt fails", attempts: 3, failures: 100, wantRequests: 3, wantErr: "HTTP 500"},
		{name: "one attempt", attempts: 1, failures: 1, wantRequests: 1, wantErr: "HTTP 500"},
		{name: "default attempts", attempts: 0, failures: 100, wantRequests: 4, wantErr: "HTTP 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newFlakyServer(t, tt.failures)
			a := newAlerter(t, Config{WebhookURL: srv.URL, Attempts: tt.attempts})
			body := []byte(`{"run_id":"r1"}`)
			err := a.deliver(context.Background(), srv.URL, body)
			if tt.wantErr != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.wantRequests, srv.requests.Load())
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for i := range srv.bodies {
				require.Equal(t, string(body), srv.bodies[i])
				require.Equal(t, "POST application/json", srv.types[i])
			}
		})
	}
}

func TestDeliverBacksOff(t *testing.T) {
	t.Parallel()
	srv := newFlakyServer(t, 2)
	a := newAlerter(t, Config{Attempts: 3})
	start := time.Now()
	require.NoError(t, a.deliver(context.Background(), srv.URL, []byte(`{}`)))
	// 500ms before the second try, 1s before the third.
	require.GreaterOrEqual(t, time.Since(start), 1500*time.Millisecond)
}

func TestDeliverStopsWhenCanceled(t *testing.T) {
	t.Parallel()
	srv := newFlakyServer(t, 100)
	a := newAlerter(t, Config{Attempts: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.deliver(ctx, srv.URL, []byte(`{}`))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 3*time.Second)
	require.LessOrEqual(t, srv.requests.Load(), int32(3))
}

func TestDeliverUnreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	a := newAlerter(t, Config{Attempts: 1})
	require.Error(t, a.deliver(context.Background(), url, []byte(`{}`)))
}

// A redirect is not followed, so that a callback cannot be sent past the
// allow-list: the delivery fails and the other host hears nothing.
func TestDeliverDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	elsewhere := newFlakyServer(t, 0)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/admin", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	a := newAlerter(t, Config{Attempts: 1})
	err := a.deliver(context.Background(), redirect.URL, []byte(`{}`))
	require.ErrorContains(t, err, "HTTP 307")
	require.Zero(t, elsewhere.requests.Load())
}

// When one sink fails, the event is tried again later, but only at the
// sinks it has not reached: the others do not get the alert twice.
func TestDeliverAllRetriesOnlyTheSinksThatFailed(t *testing.T) {
	t.Parallel()
	good, bad := newFlakyServer(t, 0), newFlakyServer(t, 1)
	a := newAlerter(t, Config{Attempts: 1})
	sinks := []sink{{"webhook", good.URL, []byte(`{}`)}, {"callback", bad.URL, []byte(`{}`)}}
	var progress atomic.Int32
	inProgress := func() error { progress.Add(1); return nil }

	require.ErrorContains(t, a.deliverAll(context.Background(), 7, sinks, inProgress), "callback: HTTP 500")
	require.NoError(t, a.deliverAll(context.Background(), 7, sinks, inProgress), "the second try reaches the callback")
	require.EqualValues(t, 1, good.requests.Load(), "the webhook got the alert once")
	require.EqualValues(t, 2, bad.requests.Load())
	require.EqualValues(t, 3, progress.Load(), "JetStream is told before each delivery")

	// Another event reaches every sink again.
	require.NoError(t, a.deliverAll(context.Background(), 8, sinks, inProgress))
	require.EqualValues(t, 2, good.requests.Load())
	a.forget(7)
	a.forget(8)
	require.Empty(t, a.reached)
}

// An outcome the projector drops raises no alert: an attempt's failure
// reported after another attempt took the run over (its executor lost its
// lease), or a state after the run ended. The attempt that took over
// alerts when it fails.
func TestNoAlertForAnEventTheProjectorDrops(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []Alert
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a Alert
		require.NoError(t, json.NewDecoder(r.Body).Decode(&a))
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	bus, ctx := runAlerter(t, "ALERTS", Config{WebhookURL: srv.URL})

	pub := events.NewPublisher(bus.JS, bus.Names)
	publish := func(run string, attempt int, st models.State) {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: run, Attempt: attempt, State: st, Source: "executor"}))
	}
	publish("taken-over", 1, models.Initializing)
	publish("taken-over", 2, models.Initializing)
	publish("taken-over", 1, models.ExecutorError) // the first attempt, late: dropped
	publish("ended", 1, models.Initializing)
	publish("ended", 1, models.Running)
	publish("ended", 1, models.Complete)
	publish("ended", 1, models.SystemError) // after the end: dropped
	publish("failed", 1, models.Initializing)
	publish("failed", 1, models.ExecutorError)
	publish("taken-over", 2, models.SystemError)

	alerted := func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		m := map[string]string{}
		for _, a := range got {
			m[a.RunID] += a.State
		}
		return m
	}
	require.Eventually(t, func() bool { return len(alerted()) == 2 }, 20*time.Second, 50*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // and nothing more comes
	require.Equal(t, map[string]string{"failed": "EXECUTOR_ERROR", "taken-over": "SYSTEM_ERROR"}, alerted())
}

// An undecodable event goes to the dead-letter stream with its reason and
// is not delivered again; the events behind it still raise their alerts.
func TestAPoisonEventIsDeadLettered(t *testing.T) {
	t.Parallel()
	var alerts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { alerts.Add(1) }))
	t.Cleanup(srv.Close)
	bus, ctx := runAlerter(t, "ALERTPOISON", Config{WebhookURL: srv.URL})

	_, err := bus.JS.Publish(ctx, bus.Names.EventSubject("poison"), []byte("not json"))
	require.NoError(t, err)
	pub := events.NewPublisher(bus.JS, bus.Names)
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "after", Attempt: 1, State: models.Initializing, Source: "executor"}))
	require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "after", Attempt: 1, State: models.ExecutorError, Source: "executor"}))
	require.Eventually(t, func() bool { return alerts.Load() == 1 }, 20*time.Second, 50*time.Millisecond, "the event behind the poison one raised no alert")

	cons, err := bus.JS.OrderedConsumer(ctx, bus.Names.DeadLetterStream(), jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	require.NoError(t, err)
	var reasons []string
	for m := range batch.Messages() {
		reasons = append(reasons, m.Headers().Get("Wes-Dead-Reason"))
	}
	require.Len(t, reasons, 1)
	require.Contains(t, reasons[0], "undecodable")
}

// Events waiting behind a slow sink are kept alive: JetStream does not
// deliver them again past AckWait, and each is posted once.
func TestEventsWaitingBehindASlowSinkArePostedOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	posted := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a Alert
		require.NoError(t, json.NewDecoder(r.Body).Decode(&a))
		time.Sleep(1200 * time.Millisecond) // slower than AckWait
		mu.Lock()
		posted[a.State]++
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	bus, ctx := runAlerter(t, "ALERTSLOW", Config{CallbackAllow: []string{srv.URL}, AckWait: time.Second})

	pub := events.NewPublisher(bus.JS, bus.Names)
	wf := &events.WorkflowRef{Tags: map[string]string{events.CallbackTag: srv.URL + "/run"}}
	states := []models.State{models.Initializing, models.Running, models.ExecutorError}
	for _, st := range states {
		require.NoError(t, pub.PublishEvent(ctx, events.RunEvent{RunID: "slow", Attempt: 1, State: st, Source: "executor", Workflow: wf}))
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return posted["EXECUTOR_ERROR"] > 0
	}, 30*time.Second, 100*time.Millisecond)
	time.Sleep(2 * time.Second) // a redelivery would be posted by now
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{"INITIALIZING": 1, "RUNNING": 1, "EXECUTOR_ERROR": 1}, posted)
}

// runAlerter runs an alerter with cfg on an embedded NATS server (namespace
// ns) until the test ends, once its consumer is in place: it delivers only
// the events published after.
func runAlerter(t *testing.T, ns string, cfg Config) (*events.Bus, context.Context) {
	t.Helper()
	bus, _ := eventstest.Bus(t, ns, events.Config{})
	a := New(cfg, bus, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, func() bool {
		_, err := bus.JS.Consumer(ctx, bus.Names.EventsStream(), ConsumerName)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the alerter's consumer never appeared")
	return bus, ctx
}
