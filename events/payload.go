package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wes-dev/wes/models"
)

// Version is the payload version this binary writes and reads.
const Version = 1

// ErrUnsupportedVersion marks a payload of a version this binary cannot read.
var ErrUnsupportedVersion = errors.New("unsupported payload version")

// RunSubmitted queues a run on WES_RUNS. It carries everything an executor
// needs, because executors never read the database.
type RunSubmitted struct {
	V             int                 `json:"v"`
	RunID         string              `json:"run_id"`
	Engine        string              `json:"engine"`
	EngineVersion string              `json:"engine_version,omitempty"`
	Request       models.RunRequest   `json:"request"`
	Attachments   []models.Attachment `json:"attachments,omitempty"`
	SubmittedAt   time.Time           `json:"submitted_at"`
	// PriorAttempts is how many attempts the run had before this message
	// was queued (a run the reconciler queued again): delivery n of this
	// message is attempt PriorAttempts+n.
	PriorAttempts int `json:"prior_attempts,omitempty"`
}

// CallbackTag is the run tag by which a run asks for its state changes to
// be posted to a URL of its own (an extension; the operator allows URL
// prefixes with WES_CALLBACK_ALLOW).
const CallbackTag = "wes.callback_url"

// CallbackAllowed reports whether raw is under one of the allowed prefixes:
// the same scheme, host and port, and the prefix's path or a path below it
// (whole segments), compared as parsed URLs (so "https://hooks.example.com@10.0.0.1/"
// is not under "https://hooks.example.com"). A URL with user information,
// a fragment or dot segments is never allowed.
func CallbackAllowed(raw string, allow []string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Fragment != "" || u.Opaque != "" || u.Host == "" ||
		(u.Scheme != "http" && u.Scheme != "https") || slices.ContainsFunc(strings.Split(u.Path, "/"), isDotSegment) {
		return false
	}
	for _, p := range allow {
		pu, err := url.Parse(p)
		if p == "" || err != nil || pu.Host == "" {
			continue
		}
		if strings.EqualFold(u.Scheme, pu.Scheme) && strings.EqualFold(u.Host, pu.Host) && underPath(u.EscapedPath(), pu.EscapedPath()) {
			return true
		}
	}
	return false
}

func isDotSegment(s string) bool { return s == "." || s == ".." }

// underPath reports whether path p is prefix or below it, segment by
// segment: "/team-a/x" is under "/team-a" and "/team-a/", "/team-admin" is
// not.
func underPath(p, prefix string) bool {
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	return len(p) == len(prefix) || strings.HasSuffix(prefix, "/") || p[len(prefix)] == '/'
}

// RetryTag is the run tag ("true" or "false") that asks for workflow
// failures (EXECUTOR_ERROR) to be retried, up to WES_MAX_ATTEMPTS attempts.
const RetryTag = "wes.retry_failures"

// SourceAPI is the Source of events the API (or its reconciler) emits.
const SourceAPI = "api"

// RunEvent reports something that happened to a run. With a State it is a
// state change; without one it only carries details (task logs).
type RunEvent struct {
	V       int          `json:"v"`
	RunID   string       `json:"run_id"`
	Attempt int          `json:"attempt"`
	State   models.State `json:"state,omitempty"`
	Time    time.Time    `json:"time"`
	// Source is "api" or the id of the executor that sent the event.
	Source string `json:"source"`
	// Cmd is the engine's argument vector, once it started.
	Cmd      []string        `json:"cmd,omitempty"`
	ExitCode *int            `json:"exit_code,omitempty"`
	Outputs  json.RawMessage `json:"outputs,omitempty"`
	// SystemLog is appended to the run's system_logs.
	SystemLog string `json:"system_log,omitempty"`
	// Error says why a run ended in SYSTEM_ERROR (the seed's error_message).
	Error string           `json:"error,omitempty"`
	Tasks []models.TaskLog `json:"tasks,omitempty"`
	// Workflow names the run's workflow on final events, for subscribers
	// (alerting) that do not read the database.
	Workflow *WorkflowRef `json:"workflow,omitempty"`
}

// WorkflowRef identifies a run's workflow.
type WorkflowRef struct {
	URL     string            `json:"url"`
	Type    string            `json:"type"`
	Version string            `json:"version"`
	Engine  string            `json:"engine"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// Ref names the workflow of a run with request req on engine.
func Ref(req models.RunRequest, engine string) *WorkflowRef {
	return &WorkflowRef{URL: req.WorkflowURL, Type: req.WorkflowType, Version: req.WorkflowTypeVersion, Engine: engine, Tags: req.Tags}
}

// MsgID is the Nats-Msg-Id of the event: the same fact reported twice
// carries the same id, so JetStream stores it once.
func (e RunEvent) MsgID() string {
	id := e.RunID + "." + strconv.Itoa(e.Attempt) + "." + string(e.State)
	if e.State == "" {
		id += "tasks." + strconv.FormatInt(e.Time.UnixNano(), 36)
	}
	return id
}

// DecodeRunSubmitted parses a RunSubmitted payload.
func DecodeRunSubmitted(data []byte) (RunSubmitted, error) {
	var m RunSubmitted
	if err := decode(data, &m, &m.V); err != nil {
		return m, err
	}
	if m.RunID == "" || m.Engine == "" {
		return m, errors.New("run.submitted without run_id or engine")
	}
	return m, nil
}

// DecodeRunEvent parses a RunEvent payload.
func DecodeRunEvent(data []byte) (RunEvent, error) {
	var e RunEvent
	if err := decode(data, &e, &e.V); err != nil {
		return e, err
	}
	if e.RunID == "" {
		return e, errors.New("run event without run_id")
	}
	if e.State != "" {
		if _, err := models.ParseState(string(e.State)); err != nil {
			return e, err
		}
	}
	return e, nil
}

func decode(data []byte, v any, version *int) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	if *version != Version {
		return fmt.Errorf("%w: %d (this binary reads %d)", ErrUnsupportedVersion, *version, Version)
	}
	return nil
}

// ExecutorInfo is what a live executor announces in the executors bucket.
type ExecutorInfo struct {
	ID        string       `json:"id"`
	Host      string       `json:"host"`
	Slots     int          `json:"slots"`
	Engines   []EngineInfo `json:"engines"`
	StartedAt time.Time    `json:"started_at"`
	// Draining says the executor is shutting down: it takes no new runs,
	// but still holds the runs in flight until they finish or it hands
	// them back.
	Draining bool `json:"draining,omitempty"`
}

// EngineInfo describes one engine an executor can run.
type EngineInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// WorkflowTypes maps a workflow type (CWL, SMK, NFL, WDL) to the
	// versions of it the engine accepts.
	WorkflowTypes map[string][]string `json:"workflow_types"`
	// Parameters are the engine parameters a run may set, with defaults.
	Parameters []EngineParameter `json:"parameters,omitempty"`
}

// EngineParameter is a workflow_engine_parameters key an engine accepts.
type EngineParameter struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Default string `json:"default_value"`
	// Values lists what an enum takes (models.ParamEnum).
	Values []string `json:"values,omitempty"`
}
