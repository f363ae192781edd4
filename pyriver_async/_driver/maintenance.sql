-- Queries of the maintenance services (pyriver_async/_maintenance). Same placeholders
-- as jobs.sql: `{schema}` is the quoted schema, `{insert_channel}` and
-- `{leadership_channel}` the quoted NOTIFY channels. Every value is a bind parameter;
-- durations travel as float seconds.

-- ---------------------------------------------------------------- leader election

-- name: maint_leader_delete_expired
-- A leader that died leaves its row behind; once expired, it is fair game.
DELETE FROM {schema}.river_leader WHERE expires_at < now();

-- name: maint_leader_elect
-- Become leader if nobody is. Concurrent electors serialise on the primary key:
-- exactly one insert wins, the others do nothing and get no row back.
INSERT INTO {schema}.river_leader (name, leader_id, elected_at, expires_at)
VALUES ('default', $1::text, now(), now() + make_interval(secs => $2::float8))
ON CONFLICT (name) DO NOTHING
RETURNING elected_at;

-- name: maint_leader_get
-- Who leads, and for how many more seconds unless renewed.
SELECT leader_id, elected_at, extract(epoch FROM expires_at - now())::float8 AS remaining
FROM {schema}.river_leader;

-- name: maint_leader_reelect
-- Renew only my own term, and only while it still holds: once expired, the row may
-- already belong (or soon belong) to someone else.
UPDATE {schema}.river_leader
SET expires_at = now() + make_interval(secs => $3::float8)
WHERE leader_id = $1::text AND elected_at = $2::timestamptz AND expires_at >= now()
RETURNING expires_at;

-- name: maint_leader_resign
-- Give up my term and tell the others, so one of them takes over at once.
WITH resigned AS (
    DELETE FROM {schema}.river_leader
    WHERE leader_id = $1::text AND elected_at = $2::timestamptz
    RETURNING leader_id
)
SELECT count(pg_notify({leadership_channel},
    json_build_object('action', 'resigned', 'leader_id', r.leader_id)::text)) AS n
FROM resigned AS r;

-- ---------------------------------------------------------------- liveness, queues

-- name: maint_client_heartbeat
-- Every running client keeps its row fresh; the rescuer reads heartbeat_at. A row a
-- stopped client marked dead ('-infinity') starts a new life when the id comes back.
INSERT INTO {schema}.pyriver_client AS c (id, hostname, pid, started_at, heartbeat_at, queues)
VALUES ($1::text, $2::text, $3::int, now(), now(), $4::text[])
ON CONFLICT (id) DO UPDATE
SET hostname = EXCLUDED.hostname,
    pid = EXCLUDED.pid,
    started_at = CASE WHEN c.heartbeat_at = '-infinity' THEN now() ELSE c.started_at END,
    heartbeat_at = now(),
    queues = EXCLUDED.queues;

-- name: maint_client_mark_dead
-- A stopping client: whatever it still holds in `running` is abandoned, so the
-- rescuer may take it back on its next pass rather than after dead_client_after.
UPDATE {schema}.pyriver_client SET heartbeat_at = '-infinity' WHERE id = $1::text;

-- name: maint_queue_keep
-- One river_queue row per queue a client works, its updated_at kept fresh (the
-- cleaner removes rows nobody has touched for a day). paused_at is left alone.
-- Sorted, so that clients touching the same rows lock them in the same order.
INSERT INTO {schema}.river_queue (name, created_at, updated_at)
SELECT q.name, now(), now()
FROM (SELECT DISTINCT unnest($1::text[]) AS name) AS q
ORDER BY q.name
ON CONFLICT (name) DO UPDATE SET updated_at = now();

-- ---------------------------------------------------------------- scheduler

-- name: maint_schedule
-- Due `scheduled` and `retryable` jobs become `available`, up to $1 per statement,
-- with one wake-up per queue that received any.
--
-- Unique jobs: a `retryable` job whose unique_states leave `retryable` out is not in
-- the unique index; making it `available` puts it back, which fails if another job
-- with its key got in meanwhile. Such a job is discarded instead (River's
-- `unique_key_conflict: scheduler_discarded`), and among several of this batch
-- returning with one key, only the first gets in. Jobs already in the index keep
-- their place (`available` is in every unique_states), so they never conflict.
-- The locked picks are MATERIALIZED: evaluated once, never rescanned by a join.
WITH due AS MATERIALIZED (
    SELECT id, unique_key, unique_states, priority, scheduled_at,
        (unique_key IS NOT NULL AND unique_states IS NOT NULL
            AND NOT {schema}.river_job_state_in_bitmask(unique_states, state)) AS reenters_index
    FROM {schema}.river_job
    WHERE state IN ('retryable', 'scheduled')
        AND scheduled_at <= now()
    ORDER BY priority, scheduled_at, id
    LIMIT $1::int
    FOR UPDATE SKIP LOCKED
),
ranked AS (
    SELECT d.id, d.unique_key, d.reenters_index,
        row_number() OVER (
            PARTITION BY d.unique_key, d.reenters_index
            ORDER BY d.priority, d.scheduled_at, d.id
        ) AS rank_in_key
    FROM due AS d
),
decided AS (
    SELECT r.id,
        CASE
            WHEN NOT r.reenters_index THEN false
            WHEN r.rank_in_key > 1 THEN true
            ELSE EXISTS (
                SELECT 1
                FROM {schema}.river_job AS o
                WHERE o.unique_key = r.unique_key
                    AND o.id <> r.id
                    AND o.unique_states IS NOT NULL
                    AND {schema}.river_job_state_in_bitmask(o.unique_states, o.state)
            )
        END AS conflict
    FROM ranked AS r
),
moved AS (
    UPDATE {schema}.river_job AS j
    SET state = (CASE WHEN d.conflict THEN 'discarded' ELSE 'available' END)::{schema}.river_job_state,
        finalized_at = CASE WHEN d.conflict THEN now() END,
        metadata = CASE
            WHEN d.conflict
                THEN j.metadata || jsonb_build_object('unique_key_conflict', 'scheduler_discarded')
            ELSE j.metadata
        END
    FROM decided AS d
    WHERE j.id = d.id
    RETURNING j.queue, j.state
),
notified AS (
    SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM moved WHERE state = 'available') AS q
)
SELECT (SELECT count(*) FROM moved)::int AS total,
    (SELECT count(*) FROM moved WHERE state = 'discarded')::int AS discarded,
    notified.n::int AS queues_notified
FROM notified;

-- ---------------------------------------------------------------- rescuer

-- name: maint_rescue
-- Running jobs that nobody is working any more, up to $3 per statement:
--   - the client that claimed it (last of attempted_by) has a liveness row that
--     has not beaten for $1 seconds (a client with no row, such as a River Go
--     process, is never judged this way), or
--   - it has been running for $2 seconds, whoever holds it (the backstop).
-- Each goes back to `retryable` to run again at once, or ends `discarded` when it
-- has no attempt left, or `cancelled` when cancellation was asked while it ran.
-- The attempt counter is left as is; an error in River's shape records the rescue.
WITH stuck AS MATERIALIZED (
    -- Locked rows are read in their latest version, so the decision below sees a
    -- cancellation asked a moment ago.
    SELECT j.id,
        (CASE
            WHEN j.metadata ? 'cancel_attempted_at' THEN 'cancelled'
            WHEN j.attempt >= j.max_attempts THEN 'discarded'
            ELSE 'retryable'
        END)::{schema}.river_job_state AS new_state,
        CASE
            WHEN c.id IS NULL THEN format('running for longer than %s seconds', $2::float8)
            WHEN c.heartbeat_at = '-infinity' THEN format('client %s stopped', c.id)
            ELSE format('client %s stopped heart-beating %s seconds ago', c.id,
                round(extract(epoch FROM now() - c.heartbeat_at)::numeric, 1))
        END AS reason
    FROM {schema}.river_job AS j
    LEFT JOIN {schema}.pyriver_client AS c
        ON c.id = j.attempted_by[cardinality(j.attempted_by)]
        AND c.heartbeat_at < now() - make_interval(secs => $1::float8)
    WHERE j.state = 'running'
        AND (c.id IS NOT NULL OR j.attempted_at < now() - make_interval(secs => $2::float8))
    ORDER BY j.id
    LIMIT $3::int
    FOR UPDATE OF j SKIP LOCKED
),
rescued AS (
    UPDATE {schema}.river_job AS j
    SET state = s.new_state,
        finalized_at = CASE WHEN s.new_state = 'retryable' THEN NULL ELSE now() END,
        -- Due at once: the job did not fail, its worker vanished or stalled, and it
        -- is already late; a retry backoff would only delay it further.
        scheduled_at = CASE WHEN s.new_state = 'retryable' THEN now() ELSE j.scheduled_at END,
        errors = array_append(j.errors, jsonb_build_object(
            'at', now(),
            'attempt', j.attempt,
            'error', 'Stuck job rescued by rescuer: ' || s.reason,
            'trace', '')),
        metadata = j.metadata || jsonb_build_object('river:rescue_count',
            CASE WHEN jsonb_typeof(j.metadata -> 'river:rescue_count') = 'number'
                THEN (j.metadata ->> 'river:rescue_count')::numeric::int ELSE 0 END + 1)
    FROM stuck AS s
    WHERE j.id = s.id AND j.state = 'running'
    RETURNING j.id, j.state
)
SELECT count(*)::int AS total,
    count(*) FILTER (WHERE state = 'retryable')::int AS retried,
    count(*) FILTER (WHERE state = 'discarded')::int AS discarded,
    count(*) FILTER (WHERE state = 'cancelled')::int AS cancelled
FROM rescued;

-- name: maint_prune_clients
-- Liveness rows of clients gone for longer than $1 seconds, once none of their
-- jobs is left in `running` (the rescuer needs the row to judge those).
DELETE FROM {schema}.pyriver_client AS c
WHERE c.heartbeat_at < now() - make_interval(secs => $1::float8)
    AND NOT EXISTS (
        SELECT 1
        FROM {schema}.river_job AS j
        WHERE j.state = 'running'
            AND j.attempted_by[cardinality(j.attempted_by)] = c.id
    );

-- ---------------------------------------------------------------- cleaner

-- name: maint_clean_jobs
-- Up to $3 finalized jobs in state $1 older than $2 seconds, picked by id so that
-- each statement holds its locks briefly. `id = ANY(ARRAY(...))` evaluates the pick
-- once (as `id IN (SELECT ...)` the planner may rescan it, and each rescan skips the
-- rows already deleted and locks the next ones, overrunning the limit). The outer
-- conditions are checked again on a row changed meanwhile (a job retried from the
-- UI is not deleted).
DELETE FROM {schema}.river_job
WHERE id = ANY(ARRAY(
        SELECT id
        FROM {schema}.river_job
        WHERE state = $1::text::{schema}.river_job_state
            AND finalized_at < now() - make_interval(secs => $2::float8)
        ORDER BY id
        LIMIT $3::int
        FOR UPDATE SKIP LOCKED
    ))
    AND state = $1::text::{schema}.river_job_state
    AND finalized_at < now() - make_interval(secs => $2::float8);

-- name: maint_clean_queues
-- river_queue rows no client has touched for $1 seconds, up to $2 at a time.
DELETE FROM {schema}.river_queue
WHERE name = ANY(ARRAY(
        SELECT name
        FROM {schema}.river_queue
        WHERE updated_at < now() - make_interval(secs => $1::float8)
        ORDER BY name
        LIMIT $2::int
        FOR UPDATE SKIP LOCKED
    ))
    AND updated_at < now() - make_interval(secs => $1::float8);

-- ---------------------------------------------------------------- vacuumer

-- name: maint_job_table_dead_tuples
-- Live and dead row versions of the job table (cumulative statistics, which lag by
-- up to a second), and whether this role may VACUUM it: the table's or the
-- database's owner, or a member of the owning role (superusers are members of every
-- role). PostgreSQL 17's MAINTAIN privilege is not looked at.
SELECT s.n_live_tup, s.n_dead_tup,
    pg_has_role(c.relowner, 'USAGE')
        OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()),
            'USAGE') AS can_vacuum
FROM pg_class AS c
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = '{schema}.river_job'::regclass;

-- name: maint_vacuum_jobs
-- SKIP_LOCKED: when autovacuum (or anyone) is already vacuuming the table, there is
-- nothing to wait for. ANALYZE keeps the planner's view of a fast-changing table fresh.
VACUUM (SKIP_LOCKED, ANALYZE) {schema}.river_job;
