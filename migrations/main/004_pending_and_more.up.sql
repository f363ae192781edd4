-- main 004: non-null args and metadata, the `pending` state, an exact finalized_at
-- rule, no more insert trigger, the queue table, and a single leader row.

-- args was only ever kept non-null by the clients; make the database say so. The
-- temporary default covers rows inserted while this runs (and, inside the
-- migration's transaction, the ALTER's exclusive lock keeps writers out until
-- commit); it is dropped at the end: every insert must state its arguments.
ALTER TABLE river_job ALTER COLUMN args SET DEFAULT '{}';
UPDATE river_job SET args = '{}' WHERE args IS NULL;
ALTER TABLE river_job
    ALTER COLUMN args SET NOT NULL,
    ALTER COLUMN args DROP DEFAULT;

-- metadata is already NOT NULL DEFAULT '{}' when created by 002; the backfill
-- covers tables that were created by hand without it.
UPDATE river_job SET metadata = '{}' WHERE metadata IS NULL;
ALTER TABLE river_job ALTER COLUMN metadata SET NOT NULL;

-- Reserved for jobs waiting on other jobs. A value added in a transaction cannot be
-- used by that same transaction; 006 uses it, which is why every migration
-- commits on its own.
ALTER TYPE river_job_state ADD VALUE IF NOT EXISTS 'pending' AFTER 'discarded';

-- finalized_at is set exactly when the job is in a final state, both ways round.
ALTER TABLE river_job DROP CONSTRAINT finalized_or_finalized_at_null;
ALTER TABLE river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
    (finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded'))
    OR (finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded'))
);

-- Clients notify on insert themselves (at most once per queue per cooldown).
DROP TRIGGER river_notify ON river_job;
DROP FUNCTION river_job_notify();

-- One row per queue that has been seen, carrying its pause state for every process.
CREATE TABLE river_queue (
    name text PRIMARY KEY NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}',
    paused_at timestamptz,
    updated_at timestamptz NOT NULL
);

-- A single leader per schema: the row's name is always 'default'.
ALTER TABLE river_leader
    ALTER COLUMN name SET DEFAULT 'default',
    DROP CONSTRAINT name_length,
    ADD CONSTRAINT name_length CHECK (name = 'default');
