// Package client talks to a WES 1.1.0 API over HTTP: the CLI's `wes runs …`
// and `wes service-info` commands use it. It knows HTTP and the WES wire
// format, nothing of the server's insides.
package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Client is a WES API client.
type Client struct {
	// BaseURL ends with the API's base path, e.g.
	// http://localhost:5000/api/ga4gh/wes/v1.
	BaseURL string
	// Token, if set, is sent as a bearer token.
	Token string
	HTTP  *http.Client
	// Warn, if set, is told when Wait cannot reach the server and goes on
	// trying.
	Warn func(msg string)
	// Unreachable is how long Wait goes on trying a server that does not
	// answer (a connection refused, a 5xx) before it gives up; default
	// 5 minutes.
	Unreachable time.Duration
}

// New returns a client of the API at baseURL.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimSuffix(baseURL, "/"), Token: token, HTTP: &http.Client{}}
}

// APIError is an ErrorResponse from the server.
type APIError struct {
	StatusCode int    `json:"status_code"`
	Msg        string `json:"msg"`
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", Printable(e.Msg), e.StatusCode) }

// Printable returns s with control characters (and the bidirectional
// overrides that reorder what a terminal shows) written as Go escapes, so
// that a string a server or another user chose cannot drive the terminal
// it is printed on (ESC sequences, OSC 52 to the clipboard).
func Printable(s string) string {
	if !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unprintable(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

// RunStatus is a run id and its state.
type RunStatus struct {
	RunID string `json:"run_id"`
	State string `json:"state"`
}

// RunSummary is an item of the run list.
type RunSummary struct {
	RunID     string            `json:"run_id"`
	State     string            `json:"state"`
	StartTime string            `json:"start_time,omitempty"`
	EndTime   string            `json:"end_time,omitempty"`
	Tags      map[string]string `json:"tags"`
}

// RunList is a page of runs.
type RunList struct {
	Runs          []RunSummary `json:"runs"`
	NextPageToken string       `json:"next_page_token"`
}

// Log is a WES Log.
type Log struct {
	Name       string   `json:"name,omitempty"`
	Cmd        []string `json:"cmd"`
	StartTime  string   `json:"start_time,omitempty"`
	EndTime    string   `json:"end_time,omitempty"`
	Stdout     string   `json:"stdout,omitempty"`
	Stderr     string   `json:"stderr,omitempty"`
	ExitCode   *int     `json:"exit_code,omitempty"`
	SystemLogs []string `json:"system_logs"`
}

// RunLog is the full record of a run.
type RunLog struct {
	RunID       string          `json:"run_id"`
	Request     json.RawMessage `json:"request"`
	State       string          `json:"state"`
	RunLog      Log             `json:"run_log"`
	TaskLogsURL string          `json:"task_logs_url"`
	Outputs     json.RawMessage `json:"outputs"`
}

// TaskList is a page of task logs.
type TaskList struct {
	TaskLogs []struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		EndTime  string `json:"end_time,omitempty"`
		ExitCode *int   `json:"exit_code,omitempty"`
	} `json:"task_logs"`
	NextPageToken string `json:"next_page_token"`
}

// OutputFile is a stored output file.
type OutputFile struct {
	Path string `json:"path"`
	Size *int64 `json:"size,omitempty"`
	URL  string `json:"url"`
}

// Terminal reports whether a state is final.
func Terminal(state string) bool {
	switch state {
	case "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED":
		return true
	}
	return false
}

// maxResponse bounds an API answer the client reads whole (logs and output
// files are streamed, not read whole).
const maxResponse = 64 << 20

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	u := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		u = c.BaseURL + path
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return err
	}
	if len(data) > maxResponse {
		return fmt.Errorf("%s %s: the answer is larger than %d MiB, more than any WES answer needs", method, u, maxResponse>>20)
	}
	if resp.StatusCode >= 300 {
		return apiError(resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// apiError reads an ErrorResponse, or keeps the body as the message.
func apiError(status int, body []byte) error {
	e := &APIError{StatusCode: status}
	if json.Unmarshal(body, e) != nil || e.Msg == "" {
		e.Msg = strings.TrimSpace(string(body))
	}
	return e
}

// ServiceInfo returns /service-info as JSON.
func (c *Client) ServiceInfo(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, c.do(ctx, http.MethodGet, "/service-info", nil, "", &raw)
}

// Submission is a run to submit as multipart/form-data.
type Submission struct {
	WorkflowType, WorkflowTypeVersion, WorkflowURL string
	WorkflowEngine, WorkflowEngineVersion          string
	Params                                         json.RawMessage
	Tags                                           map[string]string
	EngineParameters                               map[string]*string
	// Attachments maps attachment names (relative paths) to their content.
	Attachments map[string][]byte
}

// Submit posts a run and returns its id.
func (c *Client) Submit(ctx context.Context, s Submission) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fields := [][2]string{
		{"workflow_type", s.WorkflowType}, {"workflow_type_version", s.WorkflowTypeVersion},
		{"workflow_url", s.WorkflowURL}, {"workflow_engine", s.WorkflowEngine},
		{"workflow_engine_version", s.WorkflowEngineVersion},
	}
	if len(s.Params) > 0 {
		fields = append(fields, [2]string{"workflow_params", string(s.Params)})
	}
	for name, v := range map[string]any{"tags": s.Tags, "workflow_engine_parameters": s.EngineParameters} {
		data, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		if string(data) != "null" {
			fields = append(fields, [2]string{name, string(data)})
		}
	}
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return "", err
		}
	}
	for name, content := range s.Attachments {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="workflow_attachment"; filename=%q`, name))
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			return "", err
		}
		if _, err := w.Write(content); err != nil {
			return "", err
		}
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	var out struct {
		RunID string `json:"run_id"`
	}
	if err := c.do(ctx, http.MethodPost, "/runs", &buf, mw.FormDataContentType(), &out); err != nil {
		return "", err
	}
	return out.RunID, nil
}

// ListRuns returns one page of runs.
func (c *Client) ListRuns(ctx context.Context, pageSize int, pageToken, state string, tags []string) (*RunList, error) {
	q := url.Values{}
	if pageSize > 0 {
		q.Set("page_size", fmt.Sprint(pageSize))
	}
	if pageToken != "" {
		q.Set("page_token", pageToken)
	}
	if state != "" {
		q.Set("state", state)
	}
	for _, t := range tags {
		q.Add("tag", t)
	}
	var out RunList
	return &out, c.do(ctx, http.MethodGet, "/runs?"+q.Encode(), nil, "", &out)
}

// GetRun returns a run's RunLog.
func (c *Client) GetRun(ctx context.Context, id string) (*RunLog, error) {
	var out RunLog
	return &out, c.do(ctx, http.MethodGet, "/runs/"+url.PathEscape(id), nil, "", &out)
}

// Status returns a run's state.
func (c *Client) Status(ctx context.Context, id string) (*RunStatus, error) {
	var out RunStatus
	return &out, c.do(ctx, http.MethodGet, "/runs/"+url.PathEscape(id)+"/status", nil, "", &out)
}

// Cancel asks for a run to be canceled.
func (c *Client) Cancel(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/runs/"+url.PathEscape(id)+"/cancel", nil, "", nil)
}

// Tasks returns every task log of a run (all pages).
func (c *Client) Tasks(ctx context.Context, id string) (*TaskList, error) {
	all := &TaskList{}
	token := ""
	for {
		var page TaskList
		if err := c.do(ctx, http.MethodGet, "/runs/"+url.PathEscape(id)+"/tasks?page_size=1000&page_token="+url.QueryEscape(token), nil, "", &page); err != nil {
			return nil, err
		}
		all.TaskLogs = append(all.TaskLogs, page.TaskLogs...)
		if token = page.NextPageToken; token == "" {
			return all, nil
		}
	}
}

// Outputs lists a run's stored output files.
func (c *Client) Outputs(ctx context.Context, id string) ([]OutputFile, error) {
	var out struct {
		Files []OutputFile `json:"files"`
	}
	return out.Files, c.do(ctx, http.MethodGet, "/runs/"+url.PathEscape(id)+"/outputs", nil, "", &out)
}

// Stream copies what the API serves at u (a log or output URL) to w; with
// follow, a log is streamed until its run ends.
func (c *Client) Stream(ctx context.Context, u string, follow bool, w io.Writer) error {
	if follow {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "follow=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp.StatusCode, data)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Wait polls a run's status every interval until it is final, calling
// onChange at every change, and returns the final RunLog.
//
// A server that does not answer (restarting, say) is tried again, with a
// warning now and then, until it has not answered for c.Unreachable.
func (c *Client) Wait(ctx context.Context, id string, interval time.Duration, onChange func(state string)) (*RunLog, error) {
	last := ""
	var failingSince, warned time.Time
	giveUp := cmp.Or(c.Unreachable, 5*time.Minute)
	for {
		st, err := c.Status(ctx, id)
		if err == nil {
			failingSince = time.Time{}
		}
		var apiErr *APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.StatusCode < 500:
			return nil, err
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) >= giveUp {
				return nil, fmt.Errorf("gave up waiting for run %s: the server has not answered for %s: %w", id, giveUp, err)
			}
			if c.Warn != nil && time.Since(warned) >= 30*time.Second {
				warned = time.Now()
				c.Warn(fmt.Sprintf("cannot read the state of run %s (%v); trying again for up to %s", id, err, (giveUp - time.Since(failingSince)).Round(time.Second)))
			}
		case st.State != last:
			last = st.State
			if onChange != nil {
				onChange(st.State)
			}
			if Terminal(st.State) {
				return c.GetRun(ctx, id)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
	}
}
