// Package bench is the load generator behind `wes bench`: it submits mock
// runs to a running server from many concurrent clients, follows the runs'
// state events as they are published, and reports submit, dispatch and
// end-to-end throughput and latency.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/wes-dev/wes/models"
)

// Config says what load to generate.
type Config struct {
	// APIURL ends with the API's base path.
	APIURL string
	// Token, if set, is sent as a bearer token.
	Token string
	// Concurrency is the number of clients, each submitting one run after
	// another.
	Concurrency int
	// Runs stops submitting after this many submissions (0: no limit).
	Runs int
	// Duration stops submitting after this long (0: no limit).
	Duration time.Duration
	// MockDuration is how long each mock run runs.
	MockDuration time.Duration
	// Multipart submits multipart/form-data, as the WES spec describes,
	// instead of the seed's JSON body.
	Multipart bool
	// Rate, when positive, caps submissions per second across all clients
	// (an open-loop load below capacity, for latencies without queueing).
	Rate float64
	// Wait bounds how long to wait, after the last submission, for the runs
	// to complete and be recorded.
	Wait time.Duration
	// SubmitOnly measures the API alone: the bench neither follows the
	// runs' events nor waits for them, so dispatch and end to end are not
	// measured (pause the executors to keep them off the machine).
	SubmitOnly bool
}

// StateFunc is called for every run state change published, as it arrives.
type StateFunc func(runID, state string)

// Subscribe starts delivering run state changes to fn until stop is
// called. The bench measures dispatch and completion from these events, not
// by polling.
type Subscribe func(fn StateFunc) (stop func(), err error)

// Result is what one benchmark measured. Latencies are in milliseconds.
type Result struct {
	Concurrency   int     `json:"concurrency"`
	SubmitOnly    bool    `json:"submit_only,omitempty"`
	Rate          float64 `json:"rate,omitempty"`
	Format        string  `json:"format"`
	MockDurationS float64 `json:"mock_duration_s"`
	Submitted     int     `json:"submitted"`
	Completed     int     `json:"completed"`
	// Dispatched counts the runs seen INITIALIZING, whose dispatch
	// latencies make the percentiles; DispatchedEarly counts those among
	// them seen INITIALIZING before their submission's answer arrived
	// (an executor can be that fast): their dispatch latency counts as 0.
	Dispatched      int     `json:"dispatched"`
	DispatchedEarly int     `json:"dispatched_before_answer"`
	SubmitSeconds   float64 `json:"submit_seconds"`

	SubmitPerSec float64 `json:"submit_per_sec"`
	SubmitP50    float64 `json:"submit_p50_ms"`
	SubmitP95    float64 `json:"submit_p95_ms"`
	SubmitP99    float64 `json:"submit_p99_ms"`
	SubmitMax    float64 `json:"submit_max_ms"`

	// Dispatch is from the 200 of the submission to the INITIALIZING event.
	DispatchP50 float64 `json:"dispatch_p50_ms"`
	DispatchP95 float64 `json:"dispatch_p95_ms"`
	DispatchP99 float64 `json:"dispatch_p99_ms"`
	DispatchMax float64 `json:"dispatch_max_ms"`

	// E2E latency is from sending the submission to the COMPLETE event;
	// E2EPerSec counts runs until the database records all of them COMPLETE.
	E2EPerSec float64 `json:"e2e_per_sec"`
	E2EP50    float64 `json:"e2e_p50_ms"`
	E2EP95    float64 `json:"e2e_p95_ms"`
	E2EP99    float64 `json:"e2e_p99_ms"`
	E2EMax    float64 `json:"e2e_max_ms"`
	E2ESecond float64 `json:"e2e_seconds"`

	Errors      map[string]int `json:"errors"`
	ErrorsTotal int            `json:"errors_total"`
}

type sample struct {
	id       string
	sent     time.Time
	accepted time.Time
}

// tracker keeps, for each run, when it was first seen INITIALIZING and
// its first final state, and the order in which runs ended: waiting for the
// submitted runs then costs each run's end once, not a scan of every run
// per event.
type tracker struct {
	mu       sync.Mutex
	runs     map[string]*runTimes
	finished []string // run ids, in the order their final state arrived
	changed  chan struct{}
}

type runTimes struct {
	initializing time.Time
	final        string
	finalAt      time.Time
}

func (t *tracker) observe(runID, state string) {
	now := time.Now()
	t.mu.Lock()
	r := t.runs[runID]
	if r == nil {
		r = &runTimes{}
		t.runs[runID] = r
	}
	ended := false
	switch {
	case models.State(state) == models.Initializing && r.initializing.IsZero():
		r.initializing = now
	case models.State(state).Terminal() && r.final == "":
		r.final, r.finalAt = state, now
		t.finished = append(t.finished, runID)
		ended = true
	}
	t.mu.Unlock()
	if !ended {
		return
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// finishedSince returns the runs that ended after the first i.
func (t *tracker) finishedSince(i int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finished[i:len(t.finished):len(t.finished)]
}

// initialized returns when the run was first seen INITIALIZING.
func (t *tracker) initialized(runID string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.runs[runID]; r != nil && !r.initializing.IsZero() {
		return r.initializing, true
	}
	return time.Time{}, false
}

// final returns the run's first final state and when it was seen.
func (t *tracker) final(runID string) (string, time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.runs[runID]; r != nil && r.final != "" {
		return r.final, r.finalAt, true
	}
	return "", time.Time{}, false
}

// Run generates the load cfg describes and measures it.
func Run(ctx context.Context, cfg Config, subscribe Subscribe) (*Result, error) {
	if cfg.Concurrency < 1 {
		return nil, errors.New("concurrency must be at least 1")
	}
	if cfg.Runs <= 0 && cfg.Duration <= 0 {
		return nil, errors.New("give a number of runs or a duration")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 5 * time.Minute
	}
	body, contentType, err := submission(cfg)
	if err != nil {
		return nil, err
	}
	httpc := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: cfg.Concurrency * 2, MaxIdleConnsPerHost: cfg.Concurrency * 2},
	}
	api := &apiClient{base: strings.TrimSuffix(cfg.APIURL, "/"), token: cfg.Token, http: httpc}
	completeBefore, err := api.completeCount(ctx)
	if err != nil {
		return nil, fmt.Errorf("service-info of %s: %w", cfg.APIURL, err)
	}

	tr := &tracker{runs: map[string]*runTimes{}, changed: make(chan struct{}, 1)}
	if !cfg.SubmitOnly {
		stop, err := subscribe(tr.observe)
		if err != nil {
			return nil, fmt.Errorf("follow run events: %w", err)
		}
		defer stop()
	}

	var (
		mu      sync.Mutex
		samples []sample
		errs    = map[string]int{}
		issued  int
		wg      sync.WaitGroup
	)
	submitCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		submitCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	// A limiter, not a ticker: a ticker drops the ticks nobody takes in
	// time, and at thousands a second on a busy machine it drops most.
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Concurrency)
	}
	start := time.Now()
	for range cfg.Concurrency {
		wg.Go(func() {
			for submitCtx.Err() == nil {
				if limiter != nil && limiter.Wait(submitCtx) != nil {
					return
				}
				mu.Lock()
				if cfg.Runs > 0 && issued >= cfg.Runs {
					mu.Unlock()
					return
				}
				issued++
				mu.Unlock()
				sent := time.Now()
				id, kind := api.submit(ctx, body, contentType)
				accepted := time.Now()
				mu.Lock()
				if kind != "" {
					errs[kind]++
				} else {
					samples = append(samples, sample{id: id, sent: sent, accepted: accepted})
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	submitted := time.Since(start)

	var (
		recorded time.Time
		timedOut bool
	)
	if !cfg.SubmitOnly {
		recorded, timedOut, err = waitForRuns(ctx, cfg.Wait, api, tr, samples, completeBefore)
		if err != nil {
			return nil, err
		}
	}

	res := &Result{
		Concurrency: cfg.Concurrency, SubmitOnly: cfg.SubmitOnly, Rate: cfg.Rate, Format: "json", MockDurationS: cfg.MockDuration.Seconds(),
		Submitted: len(samples), SubmitSeconds: submitted.Seconds(), Errors: errs,
	}
	if cfg.Multipart {
		res.Format = "multipart"
	}
	var submitLat, dispatchLat, e2eLat []time.Duration
	for _, s := range samples {
		submitLat = append(submitLat, s.accepted.Sub(s.sent))
		if cfg.SubmitOnly {
			continue
		}
		if at, ok := tr.initialized(s.id); ok {
			res.Dispatched++
			if at.Before(s.accepted) {
				res.DispatchedEarly++
			}
			dispatchLat = append(dispatchLat, max(0, at.Sub(s.accepted)))
		}
		st, at, ok := tr.final(s.id)
		switch {
		case !ok:
			errs["not_finished"]++
		case st != "COMPLETE":
			errs["run_"+strings.ToLower(st)]++
		default:
			res.Completed++
			e2eLat = append(e2eLat, at.Sub(s.sent))
		}
	}
	if timedOut {
		errs["not_recorded_in_time"]++
	}
	res.SubmitPerSec = float64(len(samples)) / submitted.Seconds()
	res.SubmitP50, res.SubmitP95, res.SubmitP99, res.SubmitMax = percentiles(submitLat)
	res.DispatchP50, res.DispatchP95, res.DispatchP99, res.DispatchMax = percentiles(dispatchLat)
	res.E2EP50, res.E2EP95, res.E2EP99, res.E2EMax = percentiles(e2eLat)
	if !recorded.IsZero() {
		res.E2ESecond = recorded.Sub(start).Seconds()
		res.E2EPerSec = float64(res.Completed) / res.E2ESecond
	}
	for _, n := range errs {
		res.ErrorsTotal += n
	}
	return res, nil
}

// waitForRuns waits, at most wait, for every accepted run's final event,
// then for the database to record all of the COMPLETE ones: recorded is
// when it did, timedOut says it did not in time.
func waitForRuns(ctx context.Context, wait time.Duration, api *apiClient, tr *tracker, samples []sample, completeBefore int64) (recorded time.Time, timedOut bool, err error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	pending := make(map[string]struct{}, len(samples))
	for _, s := range samples {
		pending[s.id] = struct{}{}
	}
	for seen := 0; !timedOut; {
		ended := tr.finishedSince(seen)
		seen += len(ended)
		for _, id := range ended {
			delete(pending, id)
		}
		if len(pending) == 0 {
			break
		}
		// observe records a run's end before it signals, and a signal
		// pending in the buffer covers every end recorded before it is
		// taken: no end is missed.
		select {
		case <-ctx.Done():
			return time.Time{}, false, ctx.Err()
		case <-deadline.C:
			timedOut = true
		case <-tr.changed:
		}
	}
	want := completeBefore
	for _, s := range samples {
		if st, _, ok := tr.final(s.id); ok && st == "COMPLETE" {
			want++
		}
	}
	for !timedOut {
		n, err := api.completeCount(ctx)
		if err == nil && n >= want {
			recorded = time.Now()
			break
		}
		select {
		case <-ctx.Done():
			return time.Time{}, false, ctx.Err()
		case <-deadline.C:
			timedOut = true
		case <-time.After(20 * time.Millisecond):
		}
	}

	return recorded, timedOut, nil
}

// percentiles returns p50, p95, p99 and max in milliseconds.
func percentiles(d []time.Duration) (p50, p95, p99, maxMS float64) {
	if len(d) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(d)
	at := func(p float64) float64 {
		return ms(d[int(p*float64(len(d)-1)+0.5)])
	}
	return at(0.50), at(0.95), at(0.99), ms(d[len(d)-1])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// submission encodes the one request every client sends.
func submission(cfg Config) (body []byte, contentType string, err error) {
	fields := map[string]string{
		"workflow_type":              "CWL",
		"workflow_type_version":      "v1.0",
		"workflow_url":               "https://example.com/bench.cwl",
		"workflow_engine":            "mock",
		"workflow_params":            `{}`,
		"tags":                       `{"wes.bench":"true"}`,
		"workflow_engine_parameters": fmt.Sprintf(`{"duration":%q}`, cfg.MockDuration.String()),
	}
	if !cfg.Multipart {
		obj := map[string]json.RawMessage{}
		for k, v := range fields {
			if strings.HasPrefix(v, "{") {
				obj[k] = json.RawMessage(v)
			} else {
				obj[k], _ = json.Marshal(v)
			}
		}
		body, err = json.Marshal(obj)
		return body, "application/json", err
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			return nil, "", err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), mw.FormDataContentType(), nil
}

// apiClient is the little of the WES API the bench needs, kept lean so
// that the load generator spends as little of the machine as it can.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func (c *apiClient) request(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.http.Do(req)
}

// submit posts one run; it returns the run id, or the kind of error.
func (c *apiClient) submit(ctx context.Context, body []byte, contentType string) (id, errKind string) {
	resp, err := c.request(ctx, http.MethodPost, "/runs", bytes.NewReader(body), contentType)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", "timeout"
		}
		return "", "transport"
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "transport"
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Sprintf("http_%d", resp.StatusCode)
	}
	var out struct {
		RunID string `json:"run_id"`
	}
	if json.Unmarshal(data, &out) != nil || out.RunID == "" {
		return "", "bad_response"
	}
	return out.RunID, ""
}

// completeCount is the number of COMPLETE runs the database holds, from
// service-info's system_state_counts.
func (c *apiClient) completeCount(ctx context.Context) (int64, error) {
	resp, err := c.request(ctx, http.MethodGet, "/service-info", nil, "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var info struct {
		Counts map[string]int64 `json:"system_state_counts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return 0, err
	}
	return info.Counts["COMPLETE"], nil
}
