-- +goose Up
-- How far a consumer has applied a stream, moved in the transaction that
-- applies the events: the projector resumes exactly after the last event it
-- applied, whatever NATS redelivered or lost in flight.
CREATE TABLE checkpoints (
    name       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE checkpoints;
