-- main 006: uniqueness decided per state, through a bitmask stored on each job.

-- True when `state` is one of the states set in `bitmask`. Postgres numbers the bits
-- of a bit string from the left, so bit 7 is the least significant one: a client
-- writing the integer mask 1 (available) sets bit 7, 128 (scheduled) sets bit 0.
-- IMMUTABLE so that it may appear in an index predicate.
CREATE FUNCTION river_job_state_in_bitmask(bitmask bit(8), state river_job_state)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE
AS $$
    SELECT CASE state
        WHEN 'available' THEN get_bit(bitmask, 7)
        WHEN 'cancelled' THEN get_bit(bitmask, 6)
        WHEN 'completed' THEN get_bit(bitmask, 5)
        WHEN 'discarded' THEN get_bit(bitmask, 4)
        WHEN 'pending' THEN get_bit(bitmask, 3)
        WHEN 'retryable' THEN get_bit(bitmask, 2)
        WHEN 'running' THEN get_bit(bitmask, 1)
        WHEN 'scheduled' THEN get_bit(bitmask, 0)
        ELSE 0
    END = 1;
$$;

-- IF NOT EXISTS (here and on the index) lets an operator with a large river_job
-- prepare both out of band, building the index CONCURRENTLY.
ALTER TABLE river_job ADD COLUMN IF NOT EXISTS unique_states bit(8);

-- Uniqueness: one job per unique_key among the jobs whose state is in their own
-- unique_states; the insert's ON CONFLICT names this predicate.
CREATE UNIQUE INDEX IF NOT EXISTS river_job_unique_idx ON river_job (unique_key)
    WHERE unique_key IS NOT NULL
        AND unique_states IS NOT NULL
        AND river_job_state_in_bitmask(unique_states, state);

-- The per-kind index is superseded (the unique key already covers the kind).
DROP INDEX IF EXISTS river_job_kind_unique_key_idx;
