-- +goose Up
-- The executor that last reported on a run: the reconciler finds runs whose
-- executor is gone.
ALTER TABLE runs ADD COLUMN executor TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE runs DROP COLUMN executor;
