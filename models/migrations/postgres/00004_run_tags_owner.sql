-- +goose NO TRANSACTION
-- A tag filter with an owner (every list of an authenticated user) walks
-- only that owner's runs with the tag, newest first, instead of every run
-- with the tag. A run's owner never changes, so run_tags keeps a copy.
--
-- Older builds keep serving while this runs (API replicas of a rolling
-- update), so no step may block their reads or inserts of run_tags for
-- more than a moment, however large the table. Each statement commits on
-- its own (NO TRANSACTION: goose sends each one alone, in autocommit, so a
-- DO block can COMMIT). The steps that need the table locked exclusively
-- hold the lock for an instant, and wait for it 100 ms at most before
-- giving way and trying again, so that a long transaction on run_tags
-- never makes every query queue behind them. The long steps (backfill,
-- validation, index) take only row locks or SHARE UPDATE EXCLUSIVE, which
-- neither reads nor inserts wait for.
--
-- Not atomic, then: goose records version 4 only after the last statement.
-- Each step does only what is not yet done, so that `wes migrate up` after
-- a crash half-way finishes the job.

-- +goose Up
-- A build older than this migration inserts tags without an owner: they
-- take their run's before the CHECK below is tested. The column has no
-- default, so that this build's inserts, which always name the owner (''
-- included), skip the trigger.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION run_tags_fill_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT owner INTO NEW.owner FROM runs WHERE seq = NEW.run_seq;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- The column (nullable, no default: no rewrite), the trigger and a NOT NULL
-- that only rows written from now on must meet, all at once: no row is
-- written without an owner once the column exists. run_tags is locked
-- (ACCESS EXCLUSIVE) for an instant; but while this waits for the lock,
-- every later query of run_tags waits too, so a try waits 100 ms at most
-- and, refused, lets them through before the next (for minutes, then it
-- fails, to be run again).
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'run_tags'::regclass AND attname = 'owner' AND NOT attisdropped)
       AND EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'run_tags'::regclass AND tgname = 'run_tags_fill_owner')
       AND EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'run_tags'::regclass AND conname = 'run_tags_owner_not_null') THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR attempt IN 1..1200 LOOP
        BEGIN
            LOCK TABLE run_tags IN ACCESS EXCLUSIVE MODE;
            ALTER TABLE run_tags ADD COLUMN IF NOT EXISTS owner TEXT;
            IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'run_tags'::regclass AND tgname = 'run_tags_fill_owner') THEN
                CREATE TRIGGER run_tags_fill_owner BEFORE INSERT ON run_tags
                    FOR EACH ROW WHEN (NEW.owner IS NULL) EXECUTE FUNCTION run_tags_fill_owner();
            END IF;
            IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'run_tags'::regclass AND conname = 'run_tags_owner_not_null') THEN
                ALTER TABLE run_tags ADD CONSTRAINT run_tags_owner_not_null CHECK (owner IS NOT NULL) NOT VALID;
            END IF;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM pg_sleep(0.1 + 0.1 * random());
    END LOOP;
    RAISE EXCEPTION 'run_tags stayed in use for minutes: 1200 tries of 100 ms to lock it failed'
        USING ERRCODE = 'lock_not_available',
              HINT = 'See pg_stat_activity for a long transaction on run_tags, then run the migration again: it resumes.';
END
$$;
-- +goose StatementEnd

-- The rows written before: in batches of about 10,000 along the primary key
-- (run_seq, key), each committed, so that a batch's row locks are brief and
-- each batch reads only its own rows (a `WHERE owner IS NULL LIMIT n` would
-- read again, on every batch, all those the batches before filled). Those
-- the trigger or this build filled are skipped. After a crash, the batches
-- done before it are read again but not written.
-- +goose StatementBegin
DO $$
DECLARE
    lo BIGINT;
    hi BIGINT;
BEGIN
    SELECT min(run_seq) INTO lo FROM run_tags;
    WHILE lo IS NOT NULL LOOP
        -- A run with more than 10,000 tags makes a batch of its own.
        SELECT run_seq INTO hi FROM run_tags WHERE run_seq > lo ORDER BY run_seq OFFSET 9999 LIMIT 1;
        IF hi IS NULL THEN
            UPDATE run_tags t SET owner = (SELECT r.owner FROM runs r WHERE r.seq = t.run_seq)
            WHERE t.run_seq >= lo AND t.owner IS NULL;
        ELSE
            UPDATE run_tags t SET owner = (SELECT r.owner FROM runs r WHERE r.seq = t.run_seq)
            WHERE t.run_seq >= lo AND t.run_seq < hi AND t.owner IS NULL;
        END IF;
        COMMIT;
        lo := hi;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- Checks every row under SHARE UPDATE EXCLUSIVE (reads and writes go on)
-- and fails, to be run again, if the backfill missed one. The CHECK stays
-- as the NOT NULL: as good once validated, while SET NOT NULL (and
-- dropping the CHECK after it) would lock the table exclusively again.
ALTER TABLE run_tags VALIDATE CONSTRAINT run_tags_owner_not_null;

-- A CREATE INDEX CONCURRENTLY interrupted leaves an invalid index, which
-- IF NOT EXISTS would keep: drop it first (instantly, under the same
-- brief, retried lock as above; DROP INDEX CONCURRENTLY cannot be made
-- conditional).
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('run_tags_key_value_owner') AND NOT indisvalid) THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR attempt IN 1..1200 LOOP
        BEGIN
            DROP INDEX IF EXISTS run_tags_key_value_owner;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM pg_sleep(0.1 + 0.1 * random());
    END LOOP;
    RAISE EXCEPTION 'run_tags stayed in use for minutes: 1200 tries of 100 ms to lock it failed'
        USING ERRCODE = 'lock_not_available',
              HINT = 'See pg_stat_activity for a long transaction on run_tags, then run the migration again: it resumes.';
END
$$;
-- +goose StatementEnd

CREATE INDEX CONCURRENTLY IF NOT EXISTS run_tags_key_value_owner ON run_tags (key, value, owner, run_seq DESC);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS run_tags_key_value_owner;
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'run_tags'::regclass AND attname = 'owner' AND NOT attisdropped)
       AND NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'run_tags'::regclass AND tgname = 'run_tags_fill_owner') THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR attempt IN 1..1200 LOOP
        BEGIN
            LOCK TABLE run_tags IN ACCESS EXCLUSIVE MODE;
            DROP TRIGGER IF EXISTS run_tags_fill_owner ON run_tags;
            -- With its CHECK constraint.
            ALTER TABLE run_tags DROP COLUMN IF EXISTS owner;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM pg_sleep(0.1 + 0.1 * random());
    END LOOP;
    RAISE EXCEPTION 'run_tags stayed in use for minutes: 1200 tries of 100 ms to lock it failed'
        USING ERRCODE = 'lock_not_available',
              HINT = 'See pg_stat_activity for a long transaction on run_tags, then run the migration again: it resumes.';
END
$$;
-- +goose StatementEnd
DROP FUNCTION IF EXISTS run_tags_fill_owner();
