-- +goose Up
-- A tag filter with an owner (every list of an authenticated user) walks
-- only that owner's runs with the tag, newest first, instead of every run
-- with the tag. A run's owner never changes, so run_tags keeps a copy.
ALTER TABLE run_tags ADD COLUMN owner TEXT;
UPDATE run_tags SET owner = (SELECT owner FROM runs WHERE runs.seq = run_tags.run_seq);
CREATE INDEX run_tags_key_value_owner ON run_tags (key, value, owner, run_seq DESC);

-- A build older than this migration inserts tags without an owner: they
-- take their run's. (SQLite cannot add a NOT NULL column without a
-- default; this build always writes the owner, '' included.)
-- +goose StatementBegin
CREATE TRIGGER run_tags_fill_owner AFTER INSERT ON run_tags FOR EACH ROW WHEN NEW.owner IS NULL
BEGIN
    UPDATE run_tags SET owner = (SELECT owner FROM runs WHERE seq = NEW.run_seq)
    WHERE run_seq = NEW.run_seq AND key = NEW.key;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER run_tags_fill_owner;
DROP INDEX run_tags_key_value_owner;
ALTER TABLE run_tags DROP COLUMN owner;
