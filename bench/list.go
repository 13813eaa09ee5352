package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Fill inserts n synthetic finished runs straight into the PostgreSQL
// database of a wes installation, in batches, for the list benchmark: 90%
// COMPLETE, 5% EXECUTOR_ERROR, 3% SYSTEM_ERROR, 2% CANCELED. It returns the
// time it took.
func Fill(ctx context.Context, databaseURL string, n int, progress func(done int)) (time.Duration, error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return 0, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	start := time.Now()
	const batch = 50_000
	prefix := fmt.Sprintf("bench-%d-", start.UnixNano())
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		_, err := conn.Exec(ctx, `
INSERT INTO runs (id, state, attempt, workflow_params, workflow_type, workflow_type_version, tags,
                  workflow_engine_parameters, workflow_url, engine, created_at, updated_at, start_time, end_time, exit_code)
SELECT $1 || g,
       CASE WHEN g % 100 < 90 THEN 'COMPLETE' WHEN g % 100 < 95 THEN 'EXECUTOR_ERROR'
            WHEN g % 100 < 98 THEN 'SYSTEM_ERROR' ELSE 'CANCELED' END,
       1, '{"input":"s3://bucket/sample.bam"}', 'CWL', 'v1.0', '{}', '{"duration":"0s"}',
       'https://example.com/bench.cwl', 'mock', now(), now(), now(), now(), 0
FROM generate_series($2::bigint, $3::bigint) AS g`, prefix, done, done+k-1)
		if err != nil {
			return 0, fmt.Errorf("insert runs: %w", err)
		}
		if progress != nil {
			progress(done + k)
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE runs"); err != nil {
		return 0, fmt.Errorf("analyze runs: %w", err)
	}
	return time.Since(start), nil
}

// ListResult is the latency of one kind of GET /runs request.
type ListResult struct {
	Scenario string  `json:"scenario"`
	Requests int     `json:"requests"`
	Runs     int     `json:"runs"`
	P50      float64 `json:"p50_ms"`
	P95      float64 `json:"p95_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

// ListConfig says which pages to time.
type ListConfig struct {
	APIURL string
	Token  string
	// PageSize of every request.
	PageSize int
	// FirstPage is how often each first page is requested.
	FirstPage int
	// MaxPages bounds each walk through the pages (0: to the end).
	MaxPages int
}

// List times GET /runs: the first page, unfiltered and per state filter,
// and every page of a walk through the whole list by next_page_token.
func List(ctx context.Context, cfg ListConfig) ([]ListResult, error) {
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100
	}
	if cfg.FirstPage <= 0 {
		cfg.FirstPage = 200
	}
	c := &apiClient{base: strings.TrimSuffix(cfg.APIURL, "/"), token: cfg.Token, http: &http.Client{Timeout: 30 * time.Second}}
	page := func(state, token string) (time.Duration, int, string, error) {
		q := url.Values{"page_size": {fmt.Sprint(cfg.PageSize)}}
		if state != "" {
			q.Set("state", state)
		}
		if token != "" {
			q.Set("page_token", token)
		}
		t0 := time.Now()
		resp, err := c.request(ctx, http.MethodGet, "/runs?"+q.Encode(), nil, "")
		if err != nil {
			return 0, 0, "", err
		}
		defer resp.Body.Close()
		var out struct {
			Runs []json.RawMessage `json:"runs"`
			Next string            `json:"next_page_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		took := time.Since(t0)
		if resp.StatusCode != http.StatusOK {
			return 0, 0, "", fmt.Errorf("GET /runs: HTTP %d", resp.StatusCode)
		}
		return took, len(out.Runs), out.Next, err
	}
	var results []ListResult
	for _, state := range []string{"", "COMPLETE", "SYSTEM_ERROR"} {
		label := "state=" + state
		if state == "" {
			label = "unfiltered"
		}
		var lat []time.Duration
		runs := 0
		for range cfg.FirstPage {
			d, n, _, err := page(state, "")
			if err != nil {
				return nil, err
			}
			lat = append(lat, d)
			runs = n
		}
		r := ListResult{Scenario: "first page, " + label, Requests: len(lat), Runs: runs}
		r.P50, r.P95, r.P99, r.Max = percentiles(lat)
		results = append(results, r)

		lat, runs = lat[:0], 0
		token := ""
		for i := 0; cfg.MaxPages == 0 || i < cfg.MaxPages; i++ {
			d, n, next, err := page(state, token)
			if err != nil {
				return nil, err
			}
			lat = append(lat, d)
			runs += n
			if next == "" {
				break
			}
			token = next
		}
		r = ListResult{Scenario: "every page, " + label, Requests: len(lat), Runs: runs}
		r.P50, r.P95, r.P99, r.Max = percentiles(lat)
		results = append(results, r)
	}
	return results, nil
}
