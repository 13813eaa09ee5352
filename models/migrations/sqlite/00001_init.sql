-- +goose Up
CREATE TABLE runs (
    seq                        INTEGER PRIMARY KEY AUTOINCREMENT,
    id                         TEXT     NOT NULL UNIQUE,
    owner                      TEXT     NOT NULL DEFAULT '',
    state                      TEXT     NOT NULL,
    attempt                    INTEGER  NOT NULL DEFAULT 0,
    workflow_params            TEXT,
    workflow_type              TEXT     NOT NULL,
    workflow_type_version      TEXT     NOT NULL,
    tags                       TEXT,
    workflow_engine_parameters TEXT,
    workflow_engine            TEXT     NOT NULL DEFAULT '',
    workflow_engine_version    TEXT     NOT NULL DEFAULT '',
    workflow_url               TEXT     NOT NULL,
    engine                     TEXT     NOT NULL DEFAULT '',
    attachments                TEXT,
    created_at                 DATETIME NOT NULL,
    updated_at                 DATETIME NOT NULL,
    start_time                 DATETIME,
    end_time                   DATETIME,
    exit_code                  INTEGER,
    cmd                        TEXT,
    system_logs                TEXT,
    outputs                    TEXT,
    error_message              TEXT     NOT NULL DEFAULT '',
    cancel_requested           BOOLEAN  NOT NULL DEFAULT 0,
    last_event_seq             INTEGER  NOT NULL DEFAULT 0
);
CREATE INDEX runs_state_seq ON runs (state, seq DESC);
CREATE INDEX runs_owner_seq ON runs (owner, seq DESC);

CREATE TABLE run_tags (
    run_seq INTEGER NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (run_seq, key)
);
CREATE INDEX run_tags_key_value ON run_tags (key, value, run_seq);

CREATE TABLE task_logs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id     TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    cmd         TEXT,
    start_time  DATETIME,
    end_time    DATETIME,
    stdout      TEXT NOT NULL DEFAULT '',
    stderr      TEXT NOT NULL DEFAULT '',
    exit_code   INTEGER,
    system_logs TEXT,
    tes_uri     TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, task_id)
);

CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    subject    TEXT     NOT NULL,
    msg_id     TEXT     NOT NULL,
    payload    BLOB     NOT NULL,
    created_at DATETIME NOT NULL
);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO server_secrets (name, value) VALUES ('page_token', lower(hex(randomblob(32))));

-- +goose Down
DROP TABLE server_secrets;
DROP TABLE outbox;
DROP TABLE task_logs;
DROP TABLE run_tags;
DROP TABLE runs;
