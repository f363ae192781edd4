-- main 004 (down): back to the 003 shape, including an enum without `pending`.

ALTER TABLE river_leader
    ALTER COLUMN name DROP DEFAULT,
    DROP CONSTRAINT name_length,
    ADD CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128);

DROP TABLE river_queue;

-- Postgres cannot drop a value from an enum, so the type is rebuilt without
-- `pending` (a rewrite of river_job). A job in that state would have nowhere to go.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM river_job WHERE state::text = 'pending') THEN
        RAISE EXCEPTION 'cannot roll back main 004: river_job has jobs in state pending'
            USING HINT = 'Delete those jobs or move them to another state first.';
    END IF;
END;
$$;

-- The check names enum literals, so it goes before the type changes and comes
-- back in its 002 form afterwards.
ALTER TABLE river_job DROP CONSTRAINT finalized_or_finalized_at_null;

ALTER TYPE river_job_state RENAME TO river_job_state_before_004_down;
CREATE TYPE river_job_state AS ENUM (
    'available',
    'cancelled',
    'completed',
    'discarded',
    'retryable',
    'running',
    'scheduled'
);
ALTER TABLE river_job ALTER COLUMN state DROP DEFAULT;
ALTER TABLE river_job ALTER COLUMN state TYPE river_job_state USING state::text::river_job_state;
ALTER TABLE river_job ALTER COLUMN state SET DEFAULT 'available';
DROP TYPE river_job_state_before_004_down;

ALTER TABLE river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
    (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL)
    OR finalized_at IS NULL
);

CREATE FUNCTION river_job_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.state = 'available' THEN
        -- Postgres folds identical notifications sent in one transaction, so the
        -- payload names only the queue.
        PERFORM pg_notify('river_insert', json_build_object('queue', NEW.queue)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER river_notify
    AFTER INSERT ON river_job
    FOR EACH ROW
    EXECUTE FUNCTION river_job_notify();

-- metadata keeps NOT NULL DEFAULT '{}': that is how 002 created it.
ALTER TABLE river_job ALTER COLUMN args DROP NOT NULL;
