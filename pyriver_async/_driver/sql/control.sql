-- The query and control API (pyriver_async/_control.py): listing, retry, cancel and
-- delete of many jobs, queue counts, clients and the leader. Placeholders as in
-- job.sql. The listing queries are skeletons: `{where}` and `{order}` are filled by
-- pyriver_async/_driver/listing.py from its whitelisted fragments only (every value
-- is a bind parameter); each skeleton names the index that serves it.

-- name: job_list_ids_pkey
-- Candidates in id order: the primary key, walked from the cursor. Every candidate
-- query also says whether the row passes the filters its index does not serve
-- (`{ok}`), read in the same visit; with none, `true` keeps the scan index-only.
SELECT j.id, NULL::timestamptz AS at, 1 AS combo, {ok} AS ok
FROM {schema}.river_job AS j
WHERE {where}
ORDER BY {order}
LIMIT @chunk::int;

-- name: job_list_ids_fetch
-- Candidates in (scheduled_at, id) order: one range of
-- river_job_prioritized_fetching_index (state, queue, priority, scheduled_at, id) per
-- (state, queue, priority) combination, each read from the cursor with equality on
-- the first three columns and a row comparison on the last two (index-only), merged
-- by the caller. @chunk bounds every range.
SELECT c.id, c.at, g.n::int AS combo, c.ok
FROM unnest(@states::text[], @queues::text[], @priorities::smallint[]) WITH ORDINALITY
    AS g(state, queue, priority, n)
CROSS JOIN LATERAL (
    SELECT j.id, j.scheduled_at AS at, {ok} AS ok
    FROM {schema}.river_job AS j
    WHERE j.state = g.state::{schema}.river_job_state
        AND j.queue = g.queue
        AND j.priority = g.priority
        AND {where}
    ORDER BY {order}
    LIMIT @chunk::int
) AS c;

-- name: job_list_ids_finalized
-- Candidates in (finalized_at, id) order: one range of
-- river_job_state_and_finalized_at_index per finalized state. `finalized_at IS NOT
-- NULL` is written out: the planner proves a partial index's predicate from the
-- query, never from a CHECK constraint. Ties on finalized_at (a batch of completions
-- shares its now()) are put in id order by an incremental sort.
SELECT c.id, c.at, g.n::int AS combo, c.ok
FROM unnest(@states::text[]) WITH ORDINALITY AS g(state, n)
CROSS JOIN LATERAL (
    SELECT j.id, j.finalized_at AS at, {ok} AS ok
    FROM {schema}.river_job AS j
    WHERE j.state = g.state::{schema}.river_job_state
        AND j.finalized_at IS NOT NULL
        AND {where}
    ORDER BY {order}
    LIMIT @chunk::int
) AS c;

-- name: job_list_ids_contains
-- Candidates of an args / metadata containment filter: a bitmap scan of
-- river_job_args_index / river_job_metadata_index (GIN), in no order, at most
-- @chunk of them, each with its order key (`{key}`) and whether it passes the other
-- filters; when there are more, the caller walks its order's index instead.
SELECT j.id, {key} AS at, 1 AS combo, {ok} AS ok
FROM {schema}.river_job AS j
WHERE {where}
LIMIT @chunk::int;

-- name: job_list_rows
-- The page: candidate ids (primary key), every filter checked again on the row as
-- it is now, in the page's order.
SELECT {job_columns_j}
FROM {schema}.river_job AS j
WHERE j.id = ANY(@ids::bigint[])
    AND {where}
ORDER BY {order}
LIMIT @limit::int;

-- name: job_queues_in_states
-- The distinct queues holding jobs of each state: a loose index scan of
-- river_job_prioritized_fetching_index (state, queue, ...), one descent per queue.
SELECT s.state, q.queue
FROM unnest(@states::text[]) AS s(state)
CROSS JOIN LATERAL (
    WITH RECURSIVE r(queue) AS (
        (SELECT j.queue FROM {schema}.river_job AS j
            WHERE j.state = s.state::{schema}.river_job_state
            ORDER BY j.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM {schema}.river_job AS j
                WHERE j.state = s.state::{schema}.river_job_state AND j.queue > r.queue
                ORDER BY j.queue LIMIT 1)
        FROM r
        WHERE r.queue IS NOT NULL
    )
    SELECT r.queue FROM r WHERE r.queue IS NOT NULL LIMIT @max_queues::int
) AS q;

-- name: job_retry_many
-- River's retry, for many jobs at once: each job not running becomes `available`
-- now, finalized_at cleared, attempt kept, max_attempts raised by one when used up;
-- a job already available and due is left as it is. A cancellation request recorded
-- earlier (cancel_attempted_at) is dropped, or the retried attempt would end
-- `cancelled`. Unique jobs: a job whose state is outside its unique_states is not in
-- the unique index, and making it available puts it back, so it is refused when
-- another job holds its key (or an earlier job of this batch takes it).
-- One wake-up per queue that received jobs. Rows are locked in id order; a running
-- job, refused anyway, is read without a lock (a lock held until the caller's
-- transaction ends would stall its worker's outcome, and the claims behind it).
WITH seen AS MATERIALIZED (
    SELECT j.id FROM {schema}.river_job AS j WHERE j.id = ANY(@ids::bigint[])
),
locked AS MATERIALIZED (
    SELECT j.id, j.state, j.scheduled_at, j.unique_key,
        (j.unique_key IS NOT NULL AND j.unique_states IS NOT NULL
            AND NOT {schema}.river_job_state_in_bitmask(j.unique_states, j.state)) AS reenters
    FROM {schema}.river_job AS j
    WHERE j.id = ANY(@ids::bigint[]) AND j.state <> 'running'
    ORDER BY j.id
    FOR UPDATE
),
ranked AS (
    SELECT l.*,
        row_number() OVER w AS rank_in_key,
        first_value(l.id) OVER w AS first_in_key
    FROM locked AS l
    WHERE l.state NOT IN ('running')
        AND NOT (l.state = 'available' AND l.scheduled_at <= now())
    WINDOW w AS (PARTITION BY l.unique_key, l.reenters ORDER BY l.id)
),
decided AS (
    SELECT s.id,
        CASE
            WHEN l.id IS NULL THEN 'running'
            WHEN r.id IS NULL THEN 'already_available'
            WHEN r.reenters AND r.rank_in_key > 1 THEN 'unique_conflict'
            WHEN r.reenters AND c.id IS NOT NULL THEN 'unique_conflict'
            ELSE 'retry'
        END AS decision,
        CASE WHEN r.reenters AND r.rank_in_key > 1 THEN r.first_in_key ELSE c.id END
            AS conflict_id
    FROM seen AS s
    LEFT JOIN locked AS l ON l.id = s.id
    LEFT JOIN ranked AS r ON r.id = s.id
    LEFT JOIN LATERAL (
        SELECT o.id
        FROM {schema}.river_job AS o
        WHERE r.reenters
            AND o.unique_key = r.unique_key
            AND o.unique_states IS NOT NULL
            AND {schema}.river_job_state_in_bitmask(o.unique_states, o.state)
            AND o.id <> r.id
        LIMIT 1
    ) AS c ON true
),
updated AS (
    UPDATE {schema}.river_job AS j
    SET state = 'available',
        scheduled_at = now(),
        finalized_at = NULL,
        max_attempts = CASE WHEN j.attempt >= j.max_attempts THEN j.attempt + 1
            ELSE j.max_attempts END,
        metadata = j.metadata - 'cancel_attempted_at'
    FROM decided AS d
    WHERE j.id = d.id AND d.decision = 'retry'
    RETURNING {job_columns_j}
),
notified AS (
    SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM updated) AS q
)
SELECT u.*, 'retry'::text AS decision, NULL::bigint AS conflict_id
FROM updated AS u CROSS JOIN notified
UNION ALL
SELECT {job_columns_j}, d.decision, d.conflict_id
FROM decided AS d JOIN {schema}.river_job AS j ON j.id = d.id
WHERE d.decision <> 'retry';

-- name: job_unique_holder
-- The job holding @id's unique key (river_job_unique_idx, its predicate repeated).
SELECT o.id
FROM {schema}.river_job AS j
JOIN {schema}.river_job AS o ON o.unique_key = j.unique_key
WHERE j.id = @id::bigint
    AND o.unique_key IS NOT NULL
    AND o.unique_states IS NOT NULL
    AND {schema}.river_job_state_in_bitmask(o.unique_states, o.state)
    AND o.id <> j.id
LIMIT 1;

-- name: job_cancel_many
-- job_cancel for many jobs: not yet running, `cancelled` at once; running, the
-- request is recorded and the process running it told (river_control); finalized,
-- unchanged (the old state comes back as `decision`).
WITH locked AS MATERIALIZED (
    SELECT id, queue, state
    FROM {schema}.river_job
    WHERE id = ANY(@ids::bigint[])
    ORDER BY id
    FOR UPDATE
),
updated AS (
    UPDATE {schema}.river_job AS j
    SET state = CASE WHEN l.state = 'running' THEN j.state ELSE 'cancelled' END,
        finalized_at = CASE WHEN l.state = 'running' THEN j.finalized_at ELSE now() END,
        metadata = j.metadata || jsonb_build_object('cancel_attempted_at', now())
    FROM locked AS l
    WHERE j.id = l.id AND l.state NOT IN ('cancelled', 'completed', 'discarded')
    RETURNING {job_columns_j}
),
notified AS (
    SELECT count(pg_notify({control_channel}, json_build_object(
        'action', 'cancel', 'job_id', u.id, 'queue', u.queue)::text)) AS n
    FROM updated AS u
    WHERE u.state = 'running'
)
SELECT u.*, 'cancel'::text AS decision FROM updated AS u CROSS JOIN notified
UNION ALL
SELECT {job_columns_j}, l.state::text
FROM locked AS l JOIN {schema}.river_job AS j ON j.id = l.id
WHERE l.state IN ('cancelled', 'completed', 'discarded');

-- name: job_delete_many
-- Delete jobs that are not running (a running job is refused: its worker would
-- write an outcome for a row that is gone). Returns the deleted rows.
-- Running jobs are read, not locked (see job_retry_many).
WITH locked AS MATERIALIZED (
    SELECT id, state
    FROM {schema}.river_job
    WHERE id = ANY(@ids::bigint[]) AND state <> 'running'
    ORDER BY id
    FOR UPDATE
),
deleted AS (
    DELETE FROM {schema}.river_job AS j
    USING locked AS l
    WHERE j.id = l.id
    RETURNING {job_columns_j}
)
SELECT d.*, 'delete'::text AS decision FROM deleted AS d
UNION ALL
SELECT {job_columns_j}, 'running'
FROM {schema}.river_job AS j
WHERE j.id = ANY(@ids::bigint[]) AND NOT EXISTS (SELECT 1 FROM locked AS l WHERE l.id = j.id);

-- name: queue_list_rows
-- river_queue rows (its primary key); @names NULL: every queue.
SELECT name, created_at, metadata::text AS metadata, paused_at, updated_at
FROM {schema}.river_queue
WHERE @names::text[] IS NULL OR name = ANY(@names::text[])
ORDER BY name
LIMIT 10000;

-- name: queue_counts
-- Jobs per (queue, state), each counted on river_job_prioritized_fetching_index's
-- (state, queue) prefix and stopped at @cap + 1: a count above @cap is capped.
SELECT q.name, st.state,
    (SELECT count(*) FROM (
        SELECT 1 FROM {schema}.river_job AS j
        WHERE j.state = st.state::{schema}.river_job_state AND j.queue = q.name
        LIMIT @cap::int + 1) AS x)::int AS n
FROM unnest(@names::text[]) AS q(name)
CROSS JOIN unnest(@states::text[]) AS st(state);

-- name: queue_count_estimate
-- The planner's estimate of the jobs of one (state, queue), for a count past the cap
-- (statistics only: nothing is read but the catalogs).
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {schema}.river_job
WHERE state = @state::text::{schema}.river_job_state AND queue = @queue::text;

-- name: client_table_exists
-- Whether the liveness table (the pyriver migration line) is there.
SELECT to_regclass(@name::text) IS NOT NULL AS present;

-- name: client_list
-- Every liveness row (its primary key). A stopped client's heartbeat_at is
-- '-infinity' (so the rescuer takes its jobs back at once); it reports when it stopped.
SELECT id, hostname, pid, version, started_at,
    CASE WHEN heartbeat_at = '-infinity' THEN coalesce(stopped_at, started_at)
        ELSE heartbeat_at END AS heartbeat_at,
    heartbeat_at = '-infinity' AS marked_dead,
    now() AS now, queues, queue_use::text AS queue_use, stopping, dead_after,
    metadata::text AS metadata
FROM {schema}.pyriver_client
ORDER BY id
LIMIT 10000;

-- name: leader_info
SELECT leader_id, elected_at, expires_at FROM {schema}.river_leader;

-- name: schema_drop
-- `pyriver bench` only: drop the throwaway schema it made (and everything in it).
DROP SCHEMA {schema} CASCADE;
