package models

import (
	"encoding/json"
	"strings"
	"time"
)

// Run is one workflow run: the request as submitted and what became of it.
// The API inserts it (QUEUED); after that only the projector changes it.
type Run struct {
	// Seq orders runs newest-first for keyset pagination; never shown.
	Seq   int64  `gorm:"column:seq;primaryKey;autoIncrement"`
	ID    string `gorm:"column:id"`
	Owner string `gorm:"column:owner"`
	State State  `gorm:"column:state"`
	// Attempt is the delivery attempt the current state belongs to.
	Attempt int `gorm:"column:attempt"`

	Request RunRequest `gorm:"embedded"`
	// Engine is the engine chosen at submit time (names the dispatch subject).
	Engine      string       `gorm:"column:engine"`
	Attachments []Attachment `gorm:"column:attachments;serializer:json"`

	CreatedAt time.Time  `gorm:"column:created_at"`
	UpdatedAt time.Time  `gorm:"column:updated_at"`
	StartTime *time.Time `gorm:"column:start_time"`
	EndTime   *time.Time `gorm:"column:end_time"`
	ExitCode  *int       `gorm:"column:exit_code"`
	Cmd       []string   `gorm:"column:cmd;serializer:json"`
	// SystemLogs accumulates what the system has to say about the run.
	SystemLogs []string        `gorm:"column:system_logs;serializer:json"`
	Outputs    json.RawMessage `gorm:"column:outputs;serializer:json"`
	// ErrorMessage is the seed's error_message: why a run ended in SYSTEM_ERROR.
	ErrorMessage    string `gorm:"column:error_message"`
	CancelRequested bool   `gorm:"column:cancel_requested"`
	// Executor is the executor that last reported on the run.
	Executor string `gorm:"column:executor"`
	// LastEventSeq is the WES_EVENTS stream sequence last applied; an event
	// at or below it is a replay and is ignored.
	LastEventSeq uint64 `gorm:"column:last_event_seq"`
}

// TableName implements gorm's Tabler.
func (Run) TableName() string { return "runs" }

// RunRequest is the WES RunRequest as the service accepted it.
type RunRequest struct {
	WorkflowParams           json.RawMessage    `gorm:"column:workflow_params;serializer:json" json:"workflow_params,omitempty"`
	WorkflowType             string             `gorm:"column:workflow_type" json:"workflow_type"`
	WorkflowTypeVersion      string             `gorm:"column:workflow_type_version" json:"workflow_type_version"`
	Tags                     map[string]string  `gorm:"column:tags;serializer:json" json:"tags,omitempty"`
	WorkflowEngineParameters map[string]*string `gorm:"column:workflow_engine_parameters;serializer:json" json:"workflow_engine_parameters,omitempty"`
	WorkflowEngine           string             `gorm:"column:workflow_engine" json:"workflow_engine,omitempty"`
	WorkflowEngineVersion    string             `gorm:"column:workflow_engine_version" json:"workflow_engine_version,omitempty"`
	WorkflowURL              string             `gorm:"column:workflow_url" json:"workflow_url"`
}

// Attachment is one file of a run's workflow_attachment, kept in the object
// store under Key.
type Attachment struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

// RunTag indexes a run's tags for the tag filter of the run list.
type RunTag struct {
	RunSeq int64  `gorm:"column:run_seq;primaryKey"`
	Key    string `gorm:"column:key;primaryKey"`
	Value  string `gorm:"column:value"`
	// Owner is the run's (which never changes), so that an owner's list
	// filtered by a tag walks only that owner's runs with the tag.
	Owner string `gorm:"column:owner"`
}

// TableName implements gorm's Tabler.
func (RunTag) TableName() string { return "run_tags" }

// TaskLog is one step of a run as its engine reported it (WES TaskLog).
type TaskLog struct {
	Seq        int64      `gorm:"column:seq;primaryKey;autoIncrement"`
	RunID      string     `gorm:"column:run_id"`
	ID         string     `gorm:"column:task_id"`
	Name       string     `gorm:"column:name"`
	Cmd        []string   `gorm:"column:cmd;serializer:json"`
	StartTime  *time.Time `gorm:"column:start_time"`
	EndTime    *time.Time `gorm:"column:end_time"`
	Stdout     string     `gorm:"column:stdout"`
	Stderr     string     `gorm:"column:stderr"`
	ExitCode   *int       `gorm:"column:exit_code"`
	SystemLogs []string   `gorm:"column:system_logs;serializer:json"`
	TESURI     string     `gorm:"column:tes_uri"`
}

// TableName implements gorm's Tabler.
func (TaskLog) TableName() string { return "task_logs" }

// OutboxMessage is a message committed with the change that caused it and
// published by the relay after the commit.
type OutboxMessage struct {
	Seq       int64     `gorm:"column:seq;primaryKey;autoIncrement"`
	Subject   string    `gorm:"column:subject"`
	MsgID     string    `gorm:"column:msg_id"`
	Payload   []byte    `gorm:"column:payload"`
	CreatedAt time.Time `gorm:"column:created_at"`
}

// TableName implements gorm's Tabler.
func (OutboxMessage) TableName() string { return "outbox" }

// CanonicalWorkflowType returns the canonical name of a workflow type, case
// insensitively: CWL, WDL, SMK (also "Snakemake") and NFL (also "Nextflow");
// any other type is upper-cased.
func CanonicalWorkflowType(t string) string {
	switch up := strings.ToUpper(strings.TrimSpace(t)); up {
	case "SNAKEMAKE":
		return "SMK"
	case "NEXTFLOW":
		return "NFL"
	default:
		return up
	}
}

// SameVersion reports whether two workflow type or engine versions name the
// same thing, ignoring a leading "v": CWL "1.0" is "v1.0".
func SameVersion(a, b string) bool {
	return strings.TrimPrefix(strings.TrimSpace(a), "v") == strings.TrimPrefix(strings.TrimSpace(b), "v")
}
