-- main 002: the job table, its state enum, and the leader table.
--
-- Column order matters to anyone reading `SELECT *` or using COPY, and it is what
-- River's own migration produces, so it is kept as is: fixed-width columns first
-- (grouped for alignment), variable-width ones after.

CREATE TYPE river_job_state AS ENUM (
    'available',
    'cancelled',
    'completed',
    'discarded',
    'retryable',
    'running',
    'scheduled'
);

CREATE TABLE river_job (
    id bigserial PRIMARY KEY,

    state river_job_state NOT NULL DEFAULT 'available',
    attempt smallint NOT NULL DEFAULT 0,
    max_attempts smallint NOT NULL,

    attempted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz,
    scheduled_at timestamptz NOT NULL DEFAULT now(),

    priority smallint NOT NULL DEFAULT 1,

    args jsonb,
    attempted_by text[],
    errors jsonb[],
    kind text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    queue text NOT NULL DEFAULT 'default',
    tags varchar(255)[],

    -- A finalized job (and only a finalized job) carries the time it finished;
    -- version 004 tightens this to an exact two-way rule.
    CONSTRAINT finalized_or_finalized_at_null CHECK (
        (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL)
        OR finalized_at IS NULL
    ),
    CONSTRAINT max_attempts_is_positive CHECK (max_attempts > 0),
    CONSTRAINT priority_in_range CHECK (priority >= 1 AND priority <= 4),
    CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
    CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 128)
);

-- UI listing: jobs filtered by kind.
CREATE INDEX river_job_kind ON river_job USING btree (kind);

-- Cleaner: finds finalized jobs by state and age to delete them after their retention.
CREATE INDEX river_job_state_and_finalized_at_index ON river_job USING btree (state, finalized_at)
    WHERE finalized_at IS NOT NULL;

-- Claim query: the next available jobs of one queue in (priority, scheduled_at, id)
-- order; the scheduler also walks it by its leading state column for due jobs.
CREATE INDEX river_job_prioritized_fetching_index ON river_job
    USING btree (state, queue, priority, scheduled_at, id);

-- UI listing: containment filters on the job's arguments (args @> '{...}').
CREATE INDEX river_job_args_index ON river_job USING gin (args);

-- UI listing: containment filters on the job's metadata (metadata @> '{...}').
CREATE INDEX river_job_metadata_index ON river_job USING gin (metadata);

-- Early River woke producers from a trigger on every insert of an available job.
-- Version 004 removes it: clients now send that notification themselves, once per
-- queue per fetch cooldown rather than once per row.
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

-- Leader election: at most one row per name, with an expiry. UNLOGGED because
-- the row is worthless after a crash anyway (leaders re-elect within seconds) and
-- it is rewritten every few seconds, so skipping the WAL saves real work.
CREATE UNLOGGED TABLE river_leader (
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,

    leader_id text NOT NULL,
    name text PRIMARY KEY,

    CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128),
    CONSTRAINT leader_id_length CHECK (char_length(leader_id) > 0 AND char_length(leader_id) < 128)
);
