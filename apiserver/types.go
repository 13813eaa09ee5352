package apiserver

import (
	"encoding/json"
	"time"
)

// Wire types of WES 1.1.0, field for field.

type runID struct {
	RunID string `json:"run_id"`
}

type runStatus struct {
	RunID string `json:"run_id"`
	State string `json:"state"`
}

type runSummary struct {
	RunID     string            `json:"run_id"`
	State     string            `json:"state"`
	StartTime string            `json:"start_time,omitempty"`
	EndTime   string            `json:"end_time,omitempty"`
	Tags      map[string]string `json:"tags"`
}

type runListResponse struct {
	Runs          []runSummary `json:"runs"`
	NextPageToken string       `json:"next_page_token"`
}

type runRequest struct {
	WorkflowParams           json.RawMessage    `json:"workflow_params"`
	WorkflowType             string             `json:"workflow_type"`
	WorkflowTypeVersion      string             `json:"workflow_type_version"`
	Tags                     map[string]string  `json:"tags"`
	WorkflowEngineParameters map[string]*string `json:"workflow_engine_parameters"`
	WorkflowEngine           string             `json:"workflow_engine,omitempty"`
	WorkflowEngineVersion    string             `json:"workflow_engine_version,omitempty"`
	WorkflowURL              string             `json:"workflow_url"`
}

type wesLog struct {
	Name       string   `json:"name,omitempty"`
	Cmd        []string `json:"cmd"`
	StartTime  string   `json:"start_time,omitempty"`
	EndTime    string   `json:"end_time,omitempty"`
	Stdout     string   `json:"stdout,omitempty"`
	Stderr     string   `json:"stderr,omitempty"`
	ExitCode   *int     `json:"exit_code,omitempty"`
	SystemLogs []string `json:"system_logs"`
}

type taskLog struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Cmd        []string `json:"cmd"`
	StartTime  string   `json:"start_time,omitempty"`
	EndTime    string   `json:"end_time,omitempty"`
	Stdout     string   `json:"stdout,omitempty"`
	Stderr     string   `json:"stderr,omitempty"`
	ExitCode   *int     `json:"exit_code,omitempty"`
	SystemLogs []string `json:"system_logs"`
	TESURI     string   `json:"tes_uri,omitempty"`
}

type runLog struct {
	RunID       string          `json:"run_id"`
	Request     runRequest      `json:"request"`
	State       string          `json:"state"`
	RunLog      wesLog          `json:"run_log"`
	TaskLogsURL string          `json:"task_logs_url"`
	TaskLogs    []taskLog       `json:"task_logs"` // deprecated in 1.1.0: always null, see task_logs_url
	Outputs     json.RawMessage `json:"outputs"`
}

type taskListResponse struct {
	TaskLogs      []taskLog `json:"task_logs"`
	NextPageToken string    `json:"next_page_token"`
}

type serviceType struct {
	Group    string `json:"group"`
	Artifact string `json:"artifact"`
	Version  string `json:"version"`
}

type organization struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

type workflowTypeVersion struct {
	WorkflowTypeVersion []string `json:"workflow_type_version"`
}

type workflowEngineVersion struct {
	WorkflowEngineVersion []string `json:"workflow_engine_version"`
}

type defaultWorkflowEngineParameter struct {
	Name         string `json:"name"`
	Type         string `json:"type"`
	DefaultValue string `json:"default_value,omitempty"` // none for a parameter without a default
}

type serviceInfo struct {
	ID               string       `json:"id"`
	Name             string       `json:"name"`
	Type             serviceType  `json:"type"`
	Description      string       `json:"description,omitempty"`
	Organization     organization `json:"organization"`
	ContactURL       string       `json:"contactUrl,omitempty"`
	DocumentationURL string       `json:"documentationUrl,omitempty"`
	CreatedAt        string       `json:"createdAt,omitempty"`
	UpdatedAt        string       `json:"updatedAt,omitempty"`
	Environment      string       `json:"environment,omitempty"`
	Version          string       `json:"version"`

	WorkflowTypeVersions            map[string]workflowTypeVersion   `json:"workflow_type_versions"`
	SupportedWESVersions            []string                         `json:"supported_wes_versions"`
	SupportedFilesystemProtocols    []string                         `json:"supported_filesystem_protocols"`
	WorkflowEngineVersions          map[string]workflowEngineVersion `json:"workflow_engine_versions"`
	DefaultWorkflowEngineParameters []defaultWorkflowEngineParameter `json:"default_workflow_engine_parameters"`
	SystemStateCounts               map[string]int64                 `json:"system_state_counts"`
	AuthInstructionsURL             string                           `json:"auth_instructions_url"`
	Tags                            map[string]string                `json:"tags"`
}

type errorResponse struct {
	Msg        string `json:"msg"`
	StatusCode int    `json:"status_code"`
}

// timestamp formats t as the specification asks ("%Y-%m-%dT%H:%M:%SZ").
func timestamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}
