-- +goose Up
-- A tag filter with an owner (every list of an authenticated user) walks
-- only that owner's runs with the tag, newest first, instead of every run
-- with the tag. A run's owner never changes, so run_tags keeps a copy.
ALTER TABLE run_tags ADD COLUMN owner TEXT;
UPDATE run_tags SET owner = runs.owner FROM runs WHERE runs.seq = run_tags.run_seq;
ALTER TABLE run_tags ALTER COLUMN owner SET NOT NULL;
CREATE INDEX run_tags_key_value_owner ON run_tags (key, value, owner, run_seq DESC);

-- A build older than this migration (an API replica still serving while
-- this one rolls out) inserts tags without an owner: they take their run's
-- before NOT NULL is checked. The column has no default, so that this
-- build's inserts, which always name the owner ('' included), skip the
-- trigger.
-- +goose StatementBegin
CREATE FUNCTION run_tags_fill_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT owner INTO NEW.owner FROM runs WHERE seq = NEW.run_seq;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER run_tags_fill_owner BEFORE INSERT ON run_tags
    FOR EACH ROW WHEN (NEW.owner IS NULL) EXECUTE FUNCTION run_tags_fill_owner();

-- +goose Down
DROP TRIGGER run_tags_fill_owner ON run_tags;
DROP FUNCTION run_tags_fill_owner();
DROP INDEX run_tags_key_value_owner;
ALTER TABLE run_tags DROP COLUMN owner;
