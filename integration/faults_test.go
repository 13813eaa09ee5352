//go:build faults

// The fault-injection suite (issue 4, "Nothing lost, nothing stuck"): real
// processes, a workload of mock runs, faults on a fixed random seed, and an
// account at the end of what became of every run. Run it with
//
//	WES_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//	  go test -tags faults -run Fault -v -timeout 30m ./integration/
//
// WES_FAULTS_RUNS, WES_FAULTS_SEED and WES_FAULTS_DURATION make it longer
// (or replay a seed); WES_FAULTS_KEEP_LOGS=1 keeps the processes' logs.

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/alerting"
	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// The bounds the suite configures, kept short so that it runs in minutes.
const (
	faultAckWait     = 5 * time.Second  // WES_EXECUTOR_ACK_WAIT
	faultTTL         = 6 * time.Second  // WES_EXECUTOR_TTL
	faultPoll        = time.Second      // WORKFLOW_POLL_INTERVAL
	faultGrace       = 2 * time.Second  // WES_EXECUTOR_SHUTDOWN_GRACE
	faultRequeue     = 15 * time.Second // WES_REQUEUE_AFTER
	faultMaxAttempts = 4                // WES_MAX_ATTEMPTS
	faultSlots       = 4                // WES_EXECUTOR_SLOTS, per executor
	// faultSlack is what a bound may be exceeded by: a free slot to be
	// found, a NATS node being restarted at the same moment.
	faultSlack = 10 * time.Second
)

type faultConfig struct {
	runs     int
	seed     uint64
	duration time.Duration
	pauseMax time.Duration
}

func loadFaultConfig(t *testing.T) faultConfig {
	cfg := faultConfig{runs: 160, seed: 20250604, duration: 60 * time.Second, pauseMax: 10 * time.Second}
	if v := os.Getenv("WES_FAULTS_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "WES_FAULTS_RUNS")
		cfg.runs = n
	}
	if v := os.Getenv("WES_FAULTS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "WES_FAULTS_SEED")
		cfg.seed = n
	}
	if v := os.Getenv("WES_FAULTS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "WES_FAULTS_DURATION")
		cfg.duration = d
	}
	if v := os.Getenv("WES_FAULTS_PAUSE_MAX"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "WES_FAULTS_PAUSE_MAX")
		cfg.pauseMax = d
	}
	return cfg
}

// runSpec is one run of the workload, drawn from the seed.
type runSpec struct {
	i           int
	params      map[string]string
	retry       bool          // tagged wes.retry_failures=true
	expect      models.State  // the outcome the mock engine is asked for
	cancelAfter time.Duration // < 0: never canceled
}

// runRecord is what the suite knows of an accepted run.
type runRecord struct {
	runSpec
	id          string
	api         int
	submittedAt time.Time
	canceled    bool // a cancel was answered 200
}

type observation struct {
	state string
	at    time.Time
}

// faultRecord is one fault injected.
type faultRecord struct {
	kind   string
	target string
	at     time.Time
	note   string
}

type interval struct{ from, to time.Time }

type faultSuite struct {
	t       *testing.T
	cfg     faultConfig
	e       *env
	nats    *natsCluster
	apis    [2]*osProc
	bases   [2]string
	origins [2]string
	execs   [3]*osProc
	js      jetstream.JetStream
	names   events.Names
	store   *models.Store
	client  *http.Client
	start   time.Time
	metrics metricsScraper

	mu         sync.Mutex
	runs       map[string]*runRecord
	faults     []faultRecord
	natsDown   []interval
	refusals   map[string]int
	unanswered int
	gaveUp     int
	cancels    int
	observed   map[string][]observation
	polls      int
	stopped    [2]bool // API i is SIGSTOPped

	alertsMu sync.Mutex
	alerts   map[string][]string // states alerted, by run id (webhook)
}

func (s *faultSuite) logf(format string, args ...any) {
	s.t.Logf("t+%5.1fs  %s", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

func (s *faultSuite) execID(i, incarnation int) string {
	return fmt.Sprintf("exec-%d.%d", i+1, incarnation)
}

// A few hundred mock runs of varied duration and outcome, submitted through
// two APIs to three executors on a 3-node NATS cluster (R3 streams), while
// executors are killed (SIGKILL) and stopped (SIGTERM), NATS nodes and APIs
// restarted and the projector paused, on a fixed random seed. Nothing may be
// lost or stuck, no final state may change, the database must equal the
// events, and runs must move within the documented bounds.
func TestFaultInjection(t *testing.T) {
	cfg := loadFaultConfig(t)
	t.Logf("fault injection: WES_FAULTS_SEED=%d WES_FAULTS_RUNS=%d WES_FAULTS_DURATION=%s", cfg.seed, cfg.runs, cfg.duration)

	logDir, err := os.MkdirTemp("", "wes-faults-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("WES_FAULTS_KEEP_LOGS") != "" {
			t.Logf("process logs kept in %s", logDir)
			return
		}
		os.RemoveAll(logDir)
	})

	s := &faultSuite{t: t, cfg: cfg, runs: map[string]*runRecord{}, refusals: map[string]int{}, observed: map[string][]observation{},
		client: &http.Client{Timeout: 5 * time.Second}}
	// The NATS data stays with the logs when the test fails.
	s.nats = startNATSCluster(t, logDir, logDir)
	s.e = newEnv(t, s.nats.URL(), "FAULTS")
	if !strings.HasPrefix(s.e.vars["WES_DATABASE_URL"], "postgres") {
		t.Skipf("SKIPPED: the fault-injection suite needs PostgreSQL: set %s (.ci/run does)", "WES_TEST_DATABASE_URL")
	}
	// Alerts (failed runs) go to a webhook of the suite's: each failed run
	// must be alerted, with its final state, and no other run.
	s.alerts = map[string][]string{}
	hook := httptest.NewServer(http.HandlerFunc(s.receiveAlert))
	t.Cleanup(hook.Close)
	for k, v := range map[string]string{
		"WES_ALERT_WEBHOOK_URL":       hook.URL,
		"WES_NATS_REPLICAS":           "3",
		"WES_EXECUTOR_ACK_WAIT":       faultAckWait.String(),
		"WES_EXECUTOR_TTL":            faultTTL.String(),
		"WORKFLOW_POLL_INTERVAL":      faultPoll.String(),
		"WES_EXECUTOR_SHUTDOWN_GRACE": faultGrace.String(),
		"WES_MAX_ATTEMPTS":            strconv.Itoa(faultMaxAttempts),
		"WES_EXECUTOR_SLOTS":          strconv.Itoa(faultSlots),
		"WES_LOG_INTERVAL":            "1s",
		"WES_LOG_LEVEL":               "debug",
		"WES_REQUEUE_AFTER":           faultRequeue.String(),
	} {
		s.e.vars[k] = v
	}

	ctx := context.Background()
	s.store, err = models.Open(ctx, s.e.vars["WES_DATABASE_URL"])
	require.NoError(t, err)
	t.Cleanup(func() { s.store.Close() })

	// The first API creates the replicated streams before anything else
	// races it (see deployments/local-cluster.sh).
	for i := range s.apis {
		addr := "127.0.0.1:" + itoa(freePort(t))
		s.origins[i] = "http://" + addr
		s.bases[i] = s.origins[i] + "/ga4gh/wes/v1"
		s.apis[i] = s.e.wesProc(fmt.Sprintf("api-%d", i+1), logDir, fixed(map[string]string{"WES_LISTEN_ADDR": addr}), "api")
		s.apis[i].start()
		require.NoError(t, waitAnswers(s.apis[i], s.bases[i], 90*time.Second))
	}
	for i := range s.execs {
		dataDir := t.TempDir()
		s.execs[i] = s.e.wesProc(fmt.Sprintf("exec-%d", i+1), logDir, func(inc int) map[string]string {
			return map[string]string{"WES_EXECUTOR_ID": s.execID(i, inc), "WES_DATA_DIR": dataDir}
		}, "executor")
		s.execs[i].start()
	}
	for _, base := range s.bases {
		require.Eventually(t, func() bool {
			body, err := httpGet(base + "/service-info")
			return err == nil && strings.Contains(string(body), `"mock"`)
		}, 60*time.Second, 200*time.Millisecond, "the mock engine is never offered")
	}

	nc, err := nats.Connect(s.nats.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	s.js, err = jetstream.New(nc)
	require.NoError(t, err)
	s.names, err = events.NewNames("FAULTS")
	require.NoError(t, err)

	s.start = time.Now()
	back, stopBack := context.WithCancel(ctx)
	var background sync.WaitGroup
	background.Go(func() { s.poll(back) })
	background.Go(func() { s.scrape(back) })

	var faults sync.WaitGroup
	faults.Go(func() { s.injectFaults(rand.New(rand.NewPCG(cfg.seed, 2)), s.start.Add(cfg.duration)) })
	s.workload(rand.New(rand.NewPCG(cfg.seed, 1)))
	faults.Wait()
	s.logf("faults over, every process is up again; waiting for quiescence")

	s.quiesce(3 * time.Minute)
	stopBack()
	background.Wait()
	s.verify()
}

// workload submits the runs, spread over most of the fault phase, from four
// clients, alternating between the APIs; a few are canceled.
func (s *faultSuite) workload(rng *rand.Rand) {
	specs := make([]runSpec, s.cfg.runs)
	for i := range specs {
		sp := runSpec{i: i, expect: models.Complete, cancelAfter: -1, params: map[string]string{}}
		switch d := rng.IntN(100); {
		case d < 15:
			sp.params["duration"] = "0s"
		case d < 55:
			sp.params["duration"] = (time.Duration(100+rng.IntN(900)) * time.Millisecond).String()
		case d < 85:
			sp.params["duration"] = (time.Duration(1000+rng.IntN(2000)) * time.Millisecond).String()
		default:
			sp.params["duration"] = (time.Duration(3000+rng.IntN(5000)) * time.Millisecond).String()
		}
		switch o := rng.IntN(100); {
		case o < 10:
			sp.expect = models.ExecutorError
			sp.params["outcome"], sp.params["exit_code"] = "EXECUTOR_ERROR", strconv.Itoa(1+rng.IntN(9))
		case o < 15:
			sp.expect = models.SystemError
			sp.params["outcome"] = "SYSTEM_ERROR"
		case o < 21:
			sp.expect, sp.retry = models.ExecutorError, true
			sp.params["outcome"], sp.params["exit_code"] = "EXECUTOR_ERROR", "7"
			sp.params["duration"] = "300ms"
		}
		if rng.IntN(100) < 6 {
			sp.cancelAfter = time.Duration(rng.IntN(3000)) * time.Millisecond
		}
		specs[i] = sp
	}

	// Poison events, once a third of the runs are in: they must be
	// dead-lettered and block nothing, faults or not.
	poisonAt := len(specs) / 3
	jobs := make(chan runSpec)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for sp := range jobs {
				s.submit(sp)
			}
		})
	}
	spread := s.cfg.duration * 85 / 100
	for i, sp := range specs {
		if wait := time.Until(s.start.Add(spread * time.Duration(i) / time.Duration(len(specs)))); wait > 0 {
			time.Sleep(wait)
		}
		if i == poisonAt {
			s.injectPoison()
		}
		jobs <- sp
	}
	close(jobs)
	wg.Wait()
	s.logf("workload submitted: %d runs accepted", len(s.runs))
}

func (s *faultSuite) injectPoison() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, data := range []string{"not json", `{"v":99,"run_id":"poison-run"}`} {
		for {
			_, err := s.js.Publish(ctx, s.names.EventSubject("poison-run"), []byte(data))
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				s.t.Errorf("cannot publish a poison event: %v", err)
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	s.logf("2 poison events published")
}

// submit posts one run, trying the other API when one does not answer.
func (s *faultSuite) submit(sp runSpec) {
	tags := map[string]string{"suite": "faults", "i": strconv.Itoa(sp.i)}
	if sp.retry {
		tags[events.RetryTag] = "true"
	}
	body, err := json.Marshal(map[string]any{
		"workflow_params":            map[string]any{},
		"workflow_type":              "CWL",
		"workflow_type_version":      "v1.0",
		"workflow_url":               fmt.Sprintf("https://example.com/faults/wf-%d.cwl", sp.i),
		"workflow_engine_parameters": sp.params,
		"tags":                       tags,
	})
	require.NoError(s.t, err)
	api := sp.i % 2
	for try := 0; try < 40; try++ {
		if try > 0 {
			api = 1 - api
			time.Sleep(250 * time.Millisecond)
		}
		resp, err := s.client.Post(s.bases[api]+"/runs", "application/json", bytes.NewReader(body))
		if err != nil {
			var ne net.Error
			s.mu.Lock()
			if errors.As(err, &ne) && ne.Timeout() {
				// The request may have been committed: such a run is
				// not counted as accepted, but must end like any other.
				s.unanswered++
				s.refusals["no answer within 5s"]++
			} else {
				s.refusals["connection refused or reset"]++
			}
			s.mu.Unlock()
			continue
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			s.mu.Lock()
			s.refusals[fmt.Sprintf("HTTP %d: %.80s", resp.StatusCode, data)]++
			s.mu.Unlock()
			continue
		}
		var out struct {
			RunID string `json:"run_id"`
		}
		if err := json.Unmarshal(data, &out); err != nil || out.RunID == "" {
			s.t.Errorf("POST /runs answered 200 without a run id: %s", data)
			return
		}
		rec := &runRecord{runSpec: sp, id: out.RunID, api: api, submittedAt: time.Now()}
		s.mu.Lock()
		s.runs[out.RunID] = rec
		s.mu.Unlock()
		if sp.cancelAfter >= 0 {
			time.AfterFunc(sp.cancelAfter, func() { s.cancel(rec) })
		}
		return
	}
	s.mu.Lock()
	s.gaveUp++
	s.mu.Unlock()
}

func (s *faultSuite) cancel(rec *runRecord) {
	for try := 0; try < 40; try++ {
		if try > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		resp, err := s.client.Post(s.bases[(rec.api+try)%2]+"/runs/"+rec.id+"/cancel", "", nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			s.mu.Lock()
			rec.canceled = true
			s.cancels++
			s.mu.Unlock()
			return
		}
	}
	s.t.Errorf("run %s: cancel never answered 200", rec.id)
}

// poll lists every run about once a second through either API and records
// the states seen, to catch a final state that changes.
func (s *faultSuite) poll(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		if states, err := s.listStates(s.bases[i%2]); err == nil {
			now := time.Now()
			s.mu.Lock()
			s.polls++
			for id, st := range states {
				obs := s.observed[id]
				if len(obs) == 0 || obs[len(obs)-1].state != st {
					s.observed[id] = append(obs, observation{state: st, at: now})
				}
			}
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// listStates pages through GET /runs.
func (s *faultSuite) listStates(base string) (map[string]string, error) {
	states := map[string]string{}
	token := ""
	for {
		resp, err := s.client.Get(base + "/runs?page_size=1000&page_token=" + token)
		if err != nil {
			return nil, err
		}
		var page struct {
			Runs []struct {
				RunID string `json:"run_id"`
				State string `json:"state"`
			} `json:"runs"`
			NextPageToken string `json:"next_page_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /runs: %d %v", resp.StatusCode, err)
		}
		for _, r := range page.Runs {
			states[r.RunID] = r.State
		}
		if token = page.NextPageToken; token == "" {
			return states, nil
		}
	}
}

// scrape keeps the API processes' metrics (every incarnation's last).
func (s *faultSuite) scrape(ctx context.Context) {
	for ctx.Err() == nil {
		s.scrapeOnce()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	s.scrapeOnce()
}

func (s *faultSuite) scrapeOnce() {
	for i, p := range s.apis {
		s.mu.Lock()
		stopped := s.stopped[i]
		s.mu.Unlock()
		p.mu.Lock()
		key := fmt.Sprintf("%s#%d", p.name, p.incarnation)
		p.mu.Unlock()
		if !stopped && !p.exited() {
			s.metrics.scrape(key, s.origins[i]+"/metrics")
		}
	}
}

// The faults, each with its recovery.
const (
	faultExecKill    = "executor SIGKILL"
	faultExecTerm    = "executor SIGTERM"
	faultNATSRestart = "NATS node restart"
	faultAPIRestart  = "API restart"
	faultPause       = "projector pause (SIGSTOP)"
)

var faultKinds = []string{faultExecKill, faultExecTerm, faultNATSRestart, faultAPIRestart, faultPause}

// injectFaults injects faults until end: every kind at least once, in an
// order drawn from rng, then kinds drawn at random. At most one executor,
// one NATS node and one API are down at a time; each fault restarts what it
// stopped.
func (s *faultSuite) injectFaults(rng *rand.Rand, end time.Time) {
	guards := map[string]*sync.Mutex{}
	execGuard, natsGuard, apiGuard := &sync.Mutex{}, &sync.Mutex{}, &sync.Mutex{}
	guards[faultExecKill], guards[faultExecTerm] = execGuard, execGuard
	guards[faultNATSRestart] = natsGuard
	guards[faultAPIRestart], guards[faultPause] = apiGuard, apiGuard

	deck := slices.Clone(faultKinds)
	rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
	var wg sync.WaitGroup
	time.Sleep(3 * time.Second) // let the first runs start
	for time.Now().Before(end) {
		kind := faultKinds[rng.IntN(len(faultKinds))]
		if len(deck) > 0 {
			kind = deck[0]
		}
		// Everything the fault does is drawn here, so that the seed decides it.
		f := plannedFault{kind: kind, target: rng.IntN(3), hard: rng.IntN(2) == 0,
			down:  time.Duration(500+rng.IntN(2500)) * time.Millisecond,
			pause: time.Duration(2000+rng.Int64N(int64(max(s.cfg.pauseMax-2*time.Second, time.Millisecond)/time.Millisecond))) * time.Millisecond}
		gap := time.Duration(3000+rng.IntN(3000)) * time.Millisecond
		g := guards[kind]
		if g.TryLock() {
			if len(deck) > 0 {
				deck = deck[1:]
			}
			wg.Go(func() {
				defer g.Unlock()
				s.inject(f)
			})
		}
		time.Sleep(gap)
	}
	wg.Wait()
}

type plannedFault struct {
	kind   string
	target int
	hard   bool // SIGKILL rather than SIGTERM (NATS node, API)
	down   time.Duration
	pause  time.Duration
}

func (s *faultSuite) record(f faultRecord) {
	s.mu.Lock()
	s.faults = append(s.faults, f)
	s.mu.Unlock()
	s.logf("%s %s %s", f.kind, f.target, f.note)
}

func (s *faultSuite) inject(f plannedFault) {
	sig := map[bool]syscall.Signal{true: syscall.SIGKILL, false: syscall.SIGTERM}[f.hard]
	switch f.kind {
	case faultExecKill, faultExecTerm:
		p := s.execs[f.target]
		p.mu.Lock()
		id := s.execID(f.target, p.incarnation)
		p.mu.Unlock()
		sig = syscall.SIGKILL
		if f.kind == faultExecTerm {
			sig = syscall.SIGTERM
		}
		at := time.Now()
		_ = p.signal(sig)
		if !p.wait(faultGrace + 20*time.Second) {
			// SIGQUIT: the Go runtime writes every goroutine's stack to
			// the log, which shows where it hangs.
			s.t.Errorf("%s did not exit within %s of %s; goroutine dump (SIGQUIT) in %s", id, faultGrace+20*time.Second, sig, p.logPath)
			p.stop(syscall.SIGQUIT, 10*time.Second)
		}
		s.record(faultRecord{kind: f.kind, target: id, at: at, note: fmt.Sprintf("(exited after %.1fs; restarted after %s)", time.Since(at).Seconds(), f.down)})
		time.Sleep(f.down)
		p.start()
	case faultNATSRestart:
		n := s.nats.nodes[f.target]
		at := time.Now()
		if !n.proc.stop(sig, 30*time.Second) {
			s.t.Errorf("%s did not stop within 30s of %s", n.name, sig)
		}
		s.record(faultRecord{kind: f.kind, target: n.name, at: at, note: fmt.Sprintf("(%s; down for %s)", sig, f.down+2*time.Second)})
		time.Sleep(f.down + 2*time.Second)
		n.proc.start()
		err := s.nats.waitHealthy(90 * time.Second)
		s.mu.Lock()
		s.natsDown = append(s.natsDown, interval{at, time.Now()})
		s.mu.Unlock()
		if err != nil {
			s.t.Errorf("NATS cluster after restarting %s: %v", n.name, err)
		}
		s.logf("%s is back and the cluster healthy", n.name)
	case faultAPIRestart:
		i := f.target % 2
		p := s.apis[i]
		at := time.Now()
		if !p.stop(sig, 30*time.Second) {
			s.t.Errorf("api-%d did not stop within 30s of %s", i+1, sig)
		}
		s.record(faultRecord{kind: f.kind, target: p.name, at: at, note: fmt.Sprintf("(%s; restarted after %s)", sig, f.down)})
		time.Sleep(f.down)
		p.start()
		if err := waitAnswers(p, s.bases[i], 60*time.Second); err != nil {
			s.t.Errorf("api-%d after restart: %v", i+1, err)
		}
	case faultPause:
		// The lease of an API that was killed is held until it lapses
		// (events.LeaseTTL): wait for a live holder, as long as that.
		i, holder := s.projectorHolder()
		for deadline := time.Now().Add(events.LeaseTTL + 15*time.Second); i < 0 && time.Now().Before(deadline); {
			time.Sleep(500 * time.Millisecond)
			i, holder = s.projectorHolder()
		}
		if i < 0 {
			s.logf("%s: no API holds the projector lease (%q); skipped", f.kind, holder)
			return
		}
		p := s.apis[i]
		s.mu.Lock()
		s.stopped[i] = true
		s.mu.Unlock()
		at := time.Now()
		_ = p.signal(syscall.SIGSTOP)
		s.record(faultRecord{kind: f.kind, target: p.name, at: at, note: fmt.Sprintf("(holds the projector lease; stopped for %s)", f.pause)})
		time.Sleep(f.pause)
		_ = p.signal(syscall.SIGCONT)
		s.mu.Lock()
		s.stopped[i] = false
		s.mu.Unlock()
	}
}

// projectorHolder returns the index of the API process that holds the
// projector lease, or -1.
func (s *faultSuite) projectorHolder() (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := s.js.KeyValue(ctx, s.names.LeasesBucket())
	if err != nil {
		return -1, err.Error()
	}
	entry, err := kv.Get(ctx, "projector")
	if err != nil {
		return -1, err.Error()
	}
	holder := string(entry.Value())
	pid := holder[strings.LastIndexByte(holder, '-')+1:]
	for i, p := range s.apis {
		if !p.exited() && strconv.Itoa(p.pid()) == pid {
			return i, holder
		}
	}
	return -1, holder
}

// quiesce waits until every run is final, nothing is queued or waits to be
// projected, and the outbox is empty.
func (s *faultSuite) quiesce(timeout time.Duration) {
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) {
		why = s.busy(ctx)
		if why == "" {
			s.logf("quiescent")
			return
		}
		time.Sleep(time.Second)
	}
	var stuck []string
	states, _ := s.listStates(s.bases[0])
	for _, id := range sortedKeys(states) {
		if models.State(states[id]).Terminal() {
			continue
		}
		r, err := s.store.GetRun(ctx, id)
		if err != nil {
			stuck = append(stuck, id+": "+err.Error())
			continue
		}
		logs := r.SystemLogs
		if len(logs) > 3 {
			logs = logs[len(logs)-3:]
		}
		stuck = append(stuck, fmt.Sprintf("%s %s attempt %d on %s: %s", id, r.State, r.Attempt, r.Executor, strings.Join(logs, " | ")))
	}
	// Stuck runs fail the test; the checks below still run, so that the
	// table shows the rest.
	s.t.Errorf("NOT QUIESCENT after %s (%s): %s\n%s", timeout, why, firstN(stuck, 20), s.explain(states))
}

// explain lists, for each run that is not final, its events in the stream
// and whether the projector's Apply takes them, and every dead letter.
func (s *faultSuite) explain(states map[string]string) string {
	ctx := context.Background()
	var b strings.Builder
	evs, err := readEvents(ctx, s.js, s.names.EventsStream())
	if err != nil {
		return "cannot read the events stream: " + err.Error()
	}
	rp := replay(evs)
	for _, id := range sortedKeys(states) {
		if models.State(states[id]).Terminal() {
			continue
		}
		fmt.Fprintf(&b, "events of %s:\n", id)
		if r := rp[id]; r != nil {
			for _, st := range r.states {
				fmt.Fprintf(&b, "  %s attempt %d %s from %s applied=%v %q\n", st.Time.Format("15:04:05.000"), st.Attempt, st.State, st.Source, st.applied, st.SystemLog)
			}
		}
	}
	cons, err := s.js.OrderedConsumer(ctx, s.names.DeadLetterStream(), jetstream.OrderedConsumerConfig{})
	if err == nil {
		if batch, err := cons.Fetch(100, jetstream.FetchMaxWait(2*time.Second)); err == nil {
			for m := range batch.Messages() {
				fmt.Fprintf(&b, "dead letter: %s (%s seq %s): %.200s\n", m.Headers().Get("Wes-Dead-Reason"),
					m.Headers().Get("Wes-Dead-Subject"), m.Headers().Get("Wes-Dead-Stream-Seq"), m.Data())
			}
		}
	}
	return b.String()
}

func (s *faultSuite) busy(ctx context.Context) string {
	states, err := s.listStates(s.bases[0])
	if err != nil {
		return "GET /runs: " + err.Error()
	}
	n := 0
	for _, st := range states {
		if !models.State(st).Terminal() {
			n++
		}
	}
	if n > 0 {
		return fmt.Sprintf("%d runs not final", n)
	}
	if backlog, err := s.store.OutboxBacklog(ctx); err != nil || backlog > 0 {
		return fmt.Sprintf("outbox backlog %d %v", backlog, err)
	}
	if info, err := s.streamInfo(ctx, s.names.RunsStream()); err != nil || info.State.Msgs > 0 {
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%d runs still queued in %s", info.State.Msgs, s.names.RunsStream())
	}
	events, err := s.streamInfo(ctx, s.names.EventsStream())
	if err != nil {
		return err.Error()
	}
	pos, err := s.store.Checkpoint(ctx, s.names.EventsStream())
	if err != nil {
		return err.Error()
	}
	if pos < events.State.LastSeq {
		return fmt.Sprintf("projector: %d events not applied yet", events.State.LastSeq-pos)
	}
	cons, err := s.js.Consumer(ctx, s.names.EventsStream(), alerting.ConsumerName)
	if err != nil {
		return "alerts consumer: " + err.Error()
	}
	if ci, err := cons.Info(ctx); err != nil || ci.NumPending+uint64(ci.NumAckPending) > 0 {
		if err != nil {
			return "alerts consumer: " + err.Error()
		}
		return fmt.Sprintf("alerts: %d events not delivered yet, %d in delivery", ci.NumPending, ci.NumAckPending)
	}
	return ""
}

// receiveAlert records an alert posted to the suite's webhook.
func (s *faultSuite) receiveAlert(w http.ResponseWriter, r *http.Request) {
	var a alerting.Alert
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.alertsMu.Lock()
	s.alerts[a.RunID] = append(s.alerts[a.RunID], a.State)
	s.alertsMu.Unlock()
}

func (s *faultSuite) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	st, err := s.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

// verify checks every invariant and prints the table.
func (s *faultSuite) verify() {
	t := s.t
	ctx := context.Background()
	evs, err := readEvents(ctx, s.js, s.names.EventsStream())
	require.NoError(t, err)
	rp := replay(evs)
	states, err := s.listStates(s.bases[1])
	require.NoError(t, err)

	var tb table
	var failures []string
	check := func(name string, bad []string, format string, args ...any) {
		tb.add(name, verdict(len(bad) == 0), format, args...)
		if len(bad) > 0 {
			failures = append(failures, fmt.Sprintf("%s: %s", name, firstN(bad, 10)))
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	byKind := map[string]int{}
	for _, f := range s.faults {
		byKind[f.kind]++
	}
	var kinds []string
	for _, k := range faultKinds {
		kinds = append(kinds, fmt.Sprintf("%s ×%d", k, byKind[k]))
	}
	var missing []string
	for _, k := range faultKinds {
		if byKind[k] == 0 {
			missing = append(missing, k+" never injected")
		}
	}
	check("faults injected (seed "+strconv.FormatUint(s.cfg.seed, 10)+")", missing, "%s; %d cancels", strings.Join(kinds, ", "), s.cancels)

	perAPI := [2]int{}
	for _, r := range s.runs {
		perAPI[r.api]++
	}
	var gaveUp []string
	if s.gaveUp > 0 {
		gaveUp = append(gaveUp, fmt.Sprintf("%d submissions refused by both APIs for 10s", s.gaveUp))
	}
	var refused []string
	for _, k := range sortedKeys(s.refusals) {
		refused = append(refused, fmt.Sprintf("%s ×%d", k, s.refusals[k]))
	}
	check("runs accepted (200)", gaveUp, "%d of %d (api-1 %d, api-2 %d); retried elsewhere: %s", len(s.runs), s.cfg.runs, perAPI[0], perAPI[1], orNone(refused))

	// Every accepted run exists, is final, once.
	var lost, notFinal, terminals, changedAfter []string
	for id := range s.runs {
		st, ok := states[id]
		switch {
		case !ok:
			lost = append(lost, id)
		case !models.State(st).Terminal():
			notFinal = append(notFinal, id+" "+st)
		}
		r := rp[id]
		if r == nil || r.terminals != 1 {
			n := 0
			if r != nil {
				n = r.terminals
			}
			terminals = append(terminals, fmt.Sprintf("%s: %d final states applied", id, n))
		} else if r.changedAfterTerminal > 0 {
			changedAfter = append(changedAfter, fmt.Sprintf("%s: %v", id, r.applied))
		}
	}
	check("lost (accepted, not in the database)", lost, "%d", len(lost))
	check("not final after quiescence", notFinal, "%d", len(notFinal))
	check("exactly one final state applied (events replay)", append(terminals, changedAfter...), "%d of %d", len(s.runs)-len(terminals)-len(changedAfter), len(s.runs))

	// Final states never change, as seen from outside.
	var flipped []string
	for id, obs := range s.observed {
		for i, o := range obs {
			if models.State(o.state).Terminal() && i < len(obs)-1 {
				var seq []string
				for _, o := range obs {
					seq = append(seq, o.state)
				}
				flipped = append(flipped, fmt.Sprintf("%s: %s", id, strings.Join(seq, "→")))
				break
			}
		}
	}
	check("final state changed (API polled every 1s)", flipped, "%d (%d polls)", len(flipped), s.polls)

	// The database equals the events: every run in the database (accepted
	// or not answered), replayed through the projector's Apply.
	var differ, apiDiffer, notAccepted []string
	for _, id := range sortedKeys(states) {
		db, err := s.store.GetRun(ctx, id)
		if err != nil {
			differ = append(differ, id+": "+err.Error())
			continue
		}
		want := models.Run{ID: id, State: models.Queued}
		if r := rp[id]; r != nil {
			want = r.run
		}
		if d := sameRow(db, want); len(d) > 0 {
			differ = append(differ, id+": "+strings.Join(d, ", "))
		}
		if string(db.State) != states[id] {
			apiDiffer = append(apiDiffer, fmt.Sprintf("%s: api %s, db %s", id, states[id], db.State))
		}
		if _, ok := s.runs[id]; !ok {
			notAccepted = append(notAccepted, id)
			if !db.State.Terminal() {
				notFinal = append(notFinal, id+" (not answered) "+string(db.State))
			}
		}
	}
	check("database row = replay of its events", differ, "%d of %d runs equal (state, attempt, exit code, executor, cmd, logs, times, last seq)", len(states)-len(differ), len(states))
	check("API state = database", apiDiffer, "%d differ", len(apiDiffer))
	var unansweredBad []string
	for _, id := range notAccepted {
		if st := states[id]; !models.State(st).Terminal() {
			unansweredBad = append(unansweredBad, id+" "+st)
		}
	}
	check("runs committed but not answered (timeouts)", unansweredBad, "%d in the database, all final; %d requests unanswered", len(notAccepted), s.unanswered)

	// Outcomes: what the mock engine was asked for (or CANCELED).
	var wrong []string
	outcomes := map[string]int{}
	canceledEnded := map[string]int{}
	killedLast := 0 // runs whose last allowed attempt went with a killed executor
	for id, r := range s.runs {
		st := models.State(states[id])
		outcomes[string(st)]++
		if r.canceled {
			canceledEnded[string(st)]++
			if st != models.Canceled && st != r.expect {
				wrong = append(wrong, fmt.Sprintf("%s canceled, ended %s (asked for %s)", id, st, r.expect))
			}
			continue
		}
		switch {
		case st == r.expect:
		case s.lostToFaults(rp[id]):
			killedLast++
		default:
			wrong = append(wrong, fmt.Sprintf("%s ended %s, asked for %s: %s", id, st, r.expect, lastLog(s.store, id)))
		}
	}
	check("final state = outcome asked for", wrong, "%s; canceled runs ended %s; SYSTEM_ERROR for a killed last attempt %d",
		formatCounts(outcomes), formatCounts(canceledEnded), killedLast)

	// Alerts: every failed run alerted with its final state, no other.
	var unalerted, falseAlerts []string
	alerted, duplicates := 0, 0
	s.alertsMu.Lock()
	for _, id := range sortedKeys(states) {
		final := states[id]
		failed := final == string(models.ExecutorError) || final == string(models.SystemError)
		got := s.alerts[id]
		if failed {
			alerted++
			if len(got) == 0 {
				unalerted = append(unalerted, id+" "+final)
			}
		}
		for _, st := range got {
			if st != final {
				falseAlerts = append(falseAlerts, fmt.Sprintf("%s alerted %s, ended %s", id, st, final))
			}
		}
		duplicates += max(len(got)-1, 0)
	}
	s.alertsMu.Unlock()
	check("alerts (webhook) = failed runs", append(unalerted, falseAlerts...),
		"%d failed runs, %d not alerted; %d alerts of another state than the run's final one; %d repeated (at least once)",
		alerted, len(unalerted), len(falseAlerts), duplicates)

	// Attempts and bounds.
	var overAttempts []string
	hit, maxTries, handBacks, redeliveries, dropped, applied := 0, 0, 0, 0, 0, 0
	for id, r := range rp {
		dropped += r.dropped
		for _, st := range r.states {
			if st.applied {
				applied++
			}
		}
		rec := s.runs[id]
		if rec == nil {
			continue
		}
		maxTries = max(maxTries, r.tries())
		handBacks += len(r.handBacks)
		redeliveries += max(r.attempts-1, 0)
		if r.attempts > 1 && !rec.retry {
			hit++
		}
		if r.tries() > faultMaxAttempts && r.run.State != models.SystemError {
			overAttempts = append(overAttempts, fmt.Sprintf("%s: %d deliveries, %d handed back, ended %s", id, r.attempts, len(r.handBacks), r.run.State))
		}
	}
	check("attempts within WES_MAX_ATTEMPTS="+strconv.Itoa(faultMaxAttempts)+" (hand-backs not counted)", overAttempts,
		"%d runs delivered again after a fault; most attempts of a run %d; %d redeliveries, %d of them after a hand-back", hit, maxTries, redeliveries, handBacks)

	released, restarted, bad := s.bounds(rp)
	check("a dead executor's runs move within bounds", bad,
		"%d runs held by a killed/stopped executor; off it in ≤ %.1fs (bound %s), restarted in ≤ %.1fs (bound %s)",
		released.n, released.max.Seconds(), max(faultAckWait, faultTTL)+faultPoll+faultSlack,
		restarted.max.Seconds(), faultAckWait+faultSlack)

	repairs, falseRepairs := s.repairs(rp)
	check("reconciler repairs (PREEMPTED/CANCELED for a dead executor)", falseRepairs,
		"%d in the events (metrics: orphaned %.0f, orphaned_cancel %.0f); %d of a live executor; queued again (JetStream lost their message) %.0f",
		repairs, s.metrics.sum(`wes_reconciler_repairs_total{kind="orphaned"}`), s.metrics.sum(`wes_reconciler_repairs_total{kind="orphaned_cancel"}`), len(falseRepairs),
		s.metrics.sum(`wes_reconciler_repairs_total{kind="requeued"}`))

	tb.add("events (replay)", "", "%d in the stream; %d state changes applied, %d dropped (stale attempt or refused by the table)", len(evs), applied, dropped)
	tb.add("projector metrics (sum over API incarnations)", "", "applied %.0f, dropped %.0f, duplicate %.0f, poison %.0f",
		s.metrics.sum(`wes_projector_events_total{result="applied"}`), s.metrics.sum(`wes_projector_events_total{result="dropped"}`),
		s.metrics.sum(`wes_projector_events_total{result="duplicate"}`), s.metrics.sum(`wes_projector_events_total{result="poison"}`))

	var deadBad []string
	dl, err := s.streamInfo(ctx, s.names.DeadLetterStream())
	require.NoError(t, err)
	if dl.State.Msgs != 2 {
		deadBad = append(deadBad, fmt.Sprintf("%d dead letters, 2 poison events injected", dl.State.Msgs))
	}
	check("dead letters", deadBad, "%d (2 poison events injected)", dl.State.Msgs)

	// A NATS node killed under load loses nothing (R3).
	during := 0
	for _, r := range s.runs {
		for _, iv := range s.natsDown {
			if !r.submittedAt.Before(iv.from) && !r.submittedAt.After(iv.to) {
				during++
				break
			}
		}
	}
	natsBad := []string{}
	if len(lost)+len(notFinal)+len(differ) > 0 {
		natsBad = append(natsBad, "see lost / not final / database rows")
	}
	check("NATS node restarts (R3 streams): nothing lost", natsBad, "%d restarts; %d runs accepted while a node was down; 0 lost", len(s.natsDown), during)

	report := tb.String()
	t.Logf("fault-injection summary: seed %d, %d runs, faults for %s, %s in all\n%s", s.cfg.seed, s.cfg.runs, s.cfg.duration, time.Since(s.start).Round(time.Second), report)
	if path := os.Getenv("WES_FAULTS_REPORT"); path != "" {
		_ = os.WriteFile(path, []byte(report), 0o644)
	}
	if len(failures) > 0 {
		t.Errorf("invariants violated (seed %d):\n%s", s.cfg.seed, strings.Join(failures, "\n"))
	}
}

type maxDur struct {
	n   int
	max time.Duration
}

func (m *maxDur) add(d time.Duration) {
	m.n++
	m.max = max(m.max, d)
}

// bounds checks, for every executor killed or stopped, that each run it
// held was taken off it (by its own hand-back, the reconciler or another
// executor) and started again within the documented bounds.
func (s *faultSuite) bounds(rp map[string]*replayed) (released, restarted maxDur, bad []string) {
	for _, f := range s.faults {
		if f.kind != faultExecKill && f.kind != faultExecTerm {
			continue
		}
		offBound, againBound := max(faultAckWait, faultTTL)+faultPoll+faultSlack, faultAckWait+faultSlack
		if f.kind == faultExecTerm {
			offBound, againBound = faultGrace+faultSlack, faultGrace+faultSlack
		}
		// A NATS node restarting meanwhile adds its outage: until the
		// cluster has elected new leaders nothing is redelivered and no
		// registry entry expires.
		outage := s.natsOutage(f.at, f.at.Add(max(offBound, againBound)))
		offBound, againBound = offBound+outage, againBound+outage
		for id, r := range rp {
			held, heldAttempt, k := heldAt(r, f)
			if !held {
				continue
			}
			var off, again time.Duration = -1, -1
			for _, st := range r.states[k:] {
				if !st.applied {
					continue
				}
				d := st.Time.Sub(f.at)
				if off < 0 && (st.Source != f.target || st.State.Terminal() || st.State == models.Preempted) {
					off = d
				}
				if again < 0 && (st.State.Terminal() || (st.State == models.Initializing && st.Attempt > heldAttempt)) {
					again = d
				}
			}
			if off < 0 || again < 0 {
				bad = append(bad, fmt.Sprintf("%s held by %s (%s): never moved", id, f.target, f.kind))
				continue
			}
			released.add(off)
			restarted.add(again)
			if off > offBound {
				bad = append(bad, fmt.Sprintf("%s held by %s (%s): off it after %.1fs > %s", id, f.target, f.kind, off.Seconds(), offBound))
			}
			if again > againBound {
				bad = append(bad, fmt.Sprintf("%s held by %s (%s): restarted after %.1fs > %s", id, f.target, f.kind, again.Seconds(), againBound))
			}
		}
	}
	return released, restarted, bad
}

// heldAt reports whether the executor of fault f held run r when the fault
// struck, by the events applied before it, with the attempt it held and
// the index of the first of r's states after the fault.
func heldAt(r *replayed, f faultRecord) (held bool, attempt, k int) {
	for k < len(r.states) && !r.states[k].Time.After(f.at) {
		if st := r.states[k]; st.applied {
			held = st.Source == f.target && slices.Contains([]models.State{models.Initializing, models.Running, models.Paused, models.Canceling}, st.State)
			attempt = st.Attempt
		}
		k++
	}
	return held, attempt, k
}

// lostToFaults reports whether run r ended SYSTEM_ERROR because its last
// allowed attempt went with an executor a fault killed: that attempt's
// outcome was never reported, and the delivery after it was one too many
// for WES_MAX_ATTEMPTS (a run retrying its workflow failures can get there
// with one kill).
func (s *faultSuite) lostToFaults(r *replayed) bool {
	if r == nil || r.run.State != models.SystemError || r.tries() < faultMaxAttempts {
		return false
	}
	last := 0 // the last attempt that started
	for _, st := range r.states {
		if st.applied && st.State == models.Initializing {
			last = max(last, st.Attempt)
		}
	}
	for _, f := range s.faults {
		if f.kind != faultExecKill && f.kind != faultExecTerm {
			continue
		}
		if held, attempt, _ := heldAt(r, f); held && attempt == last {
			return true
		}
	}
	return false
}

// natsOutage sums the NATS node outages (from the kill until the cluster
// is healthy again) that overlap [from, to].
func (s *faultSuite) natsOutage(from, to time.Time) time.Duration {
	var d time.Duration
	for _, iv := range s.natsDown {
		if iv.from.Before(to) && iv.to.After(from) {
			d += iv.to.Sub(iv.from)
		}
	}
	return d
}

// repairs counts the reconciler's repairs in the events and lists those of
// an executor that had not been killed or stopped by then.
func (s *faultSuite) repairs(rp map[string]*replayed) (int, []string) {
	n := 0
	var wrong []string
	for id, r := range rp {
		for _, st := range r.states {
			if st.Source != events.SourceAPI || !strings.Contains(st.SystemLog, "stopped answering") {
				continue
			}
			n++
			exec := strings.Fields(st.SystemLog)[1]
			dead := slices.ContainsFunc(s.faults, func(f faultRecord) bool { return f.target == exec && !f.at.After(st.Time) })
			if !dead {
				wrong = append(wrong, fmt.Sprintf("%s: %s at t+%.1fs (applied %v)", id, st.SystemLog, st.Time.Sub(s.start).Seconds(), st.applied))
			}
		}
	}
	return n, wrong
}

func lastLog(store *models.Store, id string) string {
	r, err := store.GetRun(context.Background(), id)
	if err != nil {
		return err.Error()
	}
	return strings.Join(r.SystemLogs, " | ")
}

func formatCounts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return orNone(parts)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// A real engine: a cwltool run whose executor is killed with SIGKILL in the
// middle of it completes, as a new attempt, on another executor.
func TestFaultCWLToolExecutorKilled(t *testing.T) {
	t.Parallel()
	requireEngines(t, "cwltool")
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["DEFAULT_WES_PROVIDER"] = "local"
	e.vars["WES_EXECUTOR_ACK_WAIT"] = "4s"
	e.vars["WES_EXECUTOR_TTL"] = "4s"
	e.vars["WES_LOG_INTERVAL"] = "500ms"
	e.startAPI()
	victim := e.start("executor-a", map[string]string{"WES_EXECUTOR_ID": "exec-a", "WES_DATA_DIR": t.TempDir()}, "executor")
	e.waitEngine("cwltool")

	// A distinctive duration finds the workflow's own sleep among the
	// processes of the machine.
	const sleep = "6.37"
	status, body := e.submitMultipart(map[string]string{
		"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "slow.cwl",
	}, map[string]string{"slow.cwl": `cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c, 'sleep ` + sleep + `; echo slept > out.txt']
inputs: []
outputs:
  out:
    type: File
    outputBinding: {glob: out.txt}
`})
	require.Equal(t, http.StatusOK, status, "%s", body)
	id := strings.Split(string(body), `"`)[3]
	e.waitState(id, 60*time.Second, "RUNNING")
	require.Eventually(t, func() bool { return len(processesWith("sleep\x00"+sleep)) > 0 }, 60*time.Second, 100*time.Millisecond,
		"the workflow's sleep never started")
	t.Cleanup(func() { // what the killed executor's engine left running
		for _, pid := range processesWith(id) {
			if n, err := strconv.Atoi(pid); err == nil {
				_ = syscall.Kill(n, syscall.SIGKILL)
			}
		}
	})

	e.start("executor-b", map[string]string{"WES_EXECUTOR_ID": "exec-b", "WES_DATA_DIR": t.TempDir()}, "executor")
	killed := time.Now()
	require.NoError(t, victim.cmd.Process.Kill())
	time.Sleep(500 * time.Millisecond)
	orphans := processesWith(id + ".1")

	st, seen := e.waitState(id, 120*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
	require.Equal(t, "COMPLETE", st, "states %v", seen)
	t.Logf("cwltool run %s: COMPLETE %.1fs after its executor was killed; states seen %v", id, time.Since(killed).Seconds(), seen)
	rl := e.run(id)
	logs := strings.Join(rl.RunLog.SystemLogs, "\n")
	require.Contains(t, logs, "attempt 1 on executor exec-a")
	require.Contains(t, logs, "attempt 2 on executor exec-b")
	require.Equal(t, 0, *rl.RunLog.ExitCode)
	require.Equal(t, "slept\n", fetch(t, e.outputURL(rl, "out")))
	if len(orphans) > 0 {
		t.Logf("NOTE: %d process(es) of attempt 1 outlived their SIGKILLed executor (pids %v): the engine ran on, unowned, until it ended or an attempt on the same host killed it", len(orphans), orphans)
	}
}
