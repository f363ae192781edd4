-- main 005: migrations recorded per line, a unique key on jobs, and client tables.

-- river_migration is rebuilt keyed on (line, version) so that other migration lines
-- (pyriver_async's own `pyriver` line among them) can share it. Existing rows
-- become line 'main'. A schema managed by some other migration tool may have no
-- river_migration at all; then there is nothing to rebuild.
DO $$
BEGIN
    IF to_regclass('river_migration') IS NULL THEN
        RETURN;
    END IF;

    ALTER TABLE river_migration RENAME TO river_migration_old;

    -- The old table's primary key index keeps the name river_migration_pkey until
    -- it is dropped below, so Postgres would call this one river_migration_pkey1;
    -- River's databases carry that name, and so do ours.
    CREATE TABLE river_migration (
        line text NOT NULL,
        version bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT line_length CHECK (char_length(line) > 0 AND char_length(line) < 128),
        CONSTRAINT version_gte_1 CHECK (version >= 1),
        CONSTRAINT river_migration_pkey1 PRIMARY KEY (line, version)
    );

    INSERT INTO river_migration (created_at, line, version)
    SELECT created_at, 'main', version FROM river_migration_old;

    DROP TABLE river_migration_old;
END;
$$;

-- IF NOT EXISTS lets an operator with a large river_job add the column and build
-- the index CONCURRENTLY beforehand, then run this migration without a long lock.
ALTER TABLE river_job ADD COLUMN IF NOT EXISTS unique_key bytea;

-- Uniqueness: at most one job per (kind, unique_key); replaced in 006.
CREATE UNIQUE INDEX IF NOT EXISTS river_job_kind_unique_key_idx ON river_job (kind, unique_key)
    WHERE unique_key IS NOT NULL;

-- Reserved by River for per-client bookkeeping that it never shipped; 007 drops
-- both tables again. UNLOGGED: the rows would only describe live processes.
CREATE UNLOGGED TABLE river_client (
    id text PRIMARY KEY NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}',
    paused_at timestamptz,
    updated_at timestamptz NOT NULL,
    CONSTRAINT name_length CHECK (char_length(id) > 0 AND char_length(id) < 128)
);

-- One row per queue of a live client (river_queue is the cluster-wide view).
CREATE UNLOGGED TABLE river_client_queue (
    river_client_id text NOT NULL REFERENCES river_client (id) ON DELETE CASCADE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    max_workers bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}',
    num_jobs_completed bigint NOT NULL DEFAULT 0,
    num_jobs_running bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (river_client_id, name),
    CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128),
    CONSTRAINT num_jobs_completed_zero_or_positive CHECK (num_jobs_completed >= 0),
    CONSTRAINT num_jobs_running_zero_or_positive CHECK (num_jobs_running >= 0)
);
