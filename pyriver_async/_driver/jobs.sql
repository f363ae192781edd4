-- Queries of the job engine. `{schema}` is replaced by the quoted schema name,
-- `{job_columns}` by the column list a Job is decoded from, and `{insert_channel}`
-- by the quoted NOTIFY channel `<schema>.river_insert`. Everything else is a bind
-- parameter: no query is ever built from user text.

-- name: job_insert
-- One statement: insert (or find the unique duplicate), and wake the queue's
-- producers. Postgres folds identical notifications of one transaction into one,
-- so a transaction inserting many jobs sends one wake-up per queue.
WITH inserted AS (
    INSERT INTO {schema}.river_job (
        args, kind, max_attempts, metadata, priority, queue, scheduled_at, state,
        tags, unique_key, unique_states
    )
    SELECT $1::jsonb, $2::text, $3::smallint, $4::jsonb, $5::smallint, $6::text, s.at,
        CASE WHEN s.at > now() THEN 'scheduled' ELSE 'available' END::{schema}.river_job_state,
        $8::varchar(255)[], $9::bytea, $10::int::bit(8)
    FROM (SELECT coalesce($7::timestamptz, now()) AS at) AS s
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL
            AND {schema}.river_job_state_in_bitmask(unique_states, state)
        DO UPDATE SET kind = EXCLUDED.kind
    RETURNING {job_columns}, (xmax <> 0) AS skipped
)
SELECT inserted.*,
    CASE WHEN inserted.state = 'available' AND NOT inserted.skipped
        THEN pg_notify({insert_channel}, json_build_object('queue', inserted.queue)::text)
    END IS NULL AS _n
FROM inserted;

-- name: job_insert_many
-- Many rows in one statement from parallel arrays; one wake-up per queue.
-- Ids are drawn up front, in input order ($11 is the id sequence), so that each new
-- row is matched back to its input by `ord`; a unique duplicate comes back as the
-- existing row (skipped, no `ord`) and is matched by its unique key.
WITH input AS MATERIALIZED (
    SELECT nextval($11::regclass) AS id, a.*, coalesce(a.sched, now()) AS at
    FROM unnest(
        $1::jsonb[], $2::text[], $3::smallint[], $4::jsonb[], $5::smallint[], $6::text[],
        $7::timestamptz[], $8::text[], $9::bytea[], $10::int[]
    ) WITH ORDINALITY
        AS a(args, kind, max_attempts, metadata, priority, queue, sched, tags, unique_key,
            unique_states, ord)
),
inserted AS (
    INSERT INTO {schema}.river_job (
        id, args, kind, max_attempts, metadata, priority, queue, scheduled_at, state,
        tags, unique_key, unique_states
    )
    SELECT id, args, kind, max_attempts, metadata, priority, queue, at,
        CASE WHEN at > now() THEN 'scheduled' ELSE 'available' END::{schema}.river_job_state,
        -- tags travel as one JSON array text per row: unnest cannot take a 2-D ragged array
        coalesce(ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), '{}')::varchar(255)[],
        unique_key, unique_states::bit(8)
    FROM input
    -- Unique rows lock their index entries in key order, the same in every batch, so
    -- concurrent batches sharing keys wait for each other instead of deadlocking.
    ORDER BY unique_key NULLS FIRST, ord
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL
            AND {schema}.river_job_state_in_bitmask(unique_states, state)
        DO UPDATE SET kind = EXCLUDED.kind
    RETURNING {job_columns}, (xmax <> 0) AS skipped
),
notified AS (
    SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available' AND NOT skipped) AS q
)
SELECT i.*, input.ord
FROM inserted AS i
    LEFT JOIN input ON input.id = i.id AND NOT i.skipped
    CROSS JOIN notified;

-- name: job_notify_queues
-- The wake-ups of the COPY path: one per queue given.
SELECT count(pg_notify({insert_channel}, json_build_object('queue', q)::text))
FROM unnest($1::text[]) AS q;

-- name: job_next_ids
-- The COPY fast path's one statement before the COPY: $1 ids, the database's clock,
-- and the wake-ups. $3 are the batch's queues and $4 the earliest scheduled_at of each
-- (NULL: now); a queue whose first job is due is notified. NOTIFY is delivered at
-- commit, so it may precede the rows it announces inside the transaction. The caller
-- sorts the ids (an ORDER BY here cost a quarter of the statement's time).
SELECT
    (SELECT array_agg(nextval($2::regclass)) FROM generate_series(1, $1::int)) AS ids,
    now() AS now,
    (SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text))
        FROM unnest($3::text[], $4::timestamptz[]) AS q(queue, first_at)
        WHERE q.first_at IS NULL OR q.first_at <= now()
    ) AS notified;

-- name: job_claim
-- The claim: lock up to $2 available jobs of one queue in priority order, skipping
-- rows other producers hold, and mark them running in the same statement.
-- `id = ANY(ARRAY(...))` keeps the plan an index scan on
-- river_job_prioritized_fetching_index (`id IN (SELECT ...)` was planned as a hash join).
-- A paused queue (river_queue.paused_at set) yields nothing, whatever a producer believes.
UPDATE {schema}.river_job AS j
SET state = 'running',
    attempt = j.attempt + 1,
    attempted_at = now(),
    attempted_by = CASE
        WHEN coalesce(array_length(j.attempted_by, 1), 0) >= 100
            THEN array_append(j.attempted_by[2:], $3::text)
        ELSE array_append(j.attempted_by, $3::text)
    END
WHERE j.id = ANY(ARRAY(
    SELECT id
    FROM {schema}.river_job
    WHERE state = 'available'
        AND queue = $1::text
        AND scheduled_at <= now()
        AND NOT EXISTS (
            SELECT 1 FROM {schema}.river_queue
            WHERE name = $1::text AND paused_at IS NOT NULL
        )
    ORDER BY priority, scheduled_at, id
    LIMIT $2::int
    FOR UPDATE SKIP LOCKED
))
RETURNING {job_columns_j};

-- name: job_complete_many
-- The hot path of the completer: jobs that returned normally. The guard (still
-- running the same claim: same attempt and same attempted_at) makes a stale
-- completion change nothing: the job was rescued and claimed again since, or, after
-- a retried write whose first reply was lost, given back and claimed by another
-- worker with the same attempt number (a snooze or shutdown returns the attempt).
-- Rows are found by primary key. `state::text` keeps the planner off the claim
-- index: statistics taken while few jobs ran make `state = 'running'` look like one
-- row, and that scan then wades through every dead `running` entry of a busy table
-- (measured: the drain fell from ~24k to ~1.5k jobs/s beside 200k finished rows).
UPDATE {schema}.river_job AS j
SET state = 'completed', finalized_at = now()
FROM unnest($1::bigint[], $2::smallint[], $3::timestamptz[]) AS u(id, attempt, attempted_at)
WHERE j.id = u.id
    AND j.state::text = 'running' AND j.attempt = u.attempt
    AND j.attempted_at = u.attempted_at
RETURNING j.id;

-- name: job_set_outcome_many
-- Every other outcome (retryable, discarded, cancelled, snoozed, returned on
-- shutdown) in one statement. Per row: the new state, when it finalizes or runs
-- next, an error to append, a metadata patch to merge, and how much to give back of
-- the attempt counter (1 for a snooze or a shutdown interruption). Jobs made
-- available again (a short snooze, a shutdown) wake their queue's producers.
WITH updated AS (
UPDATE {schema}.river_job AS j
SET state = (CASE
        -- Cancellation was asked while it ran (maybe while this process could not hear
        -- it): an attempt that did not succeed ends the job instead of retrying it.
        WHEN u.state IN ('retryable', 'scheduled', 'available')
            AND j.metadata ? 'cancel_attempted_at' AND NOT u.snoozed THEN 'cancelled'
        ELSE u.state
    END)::{schema}.river_job_state,
    finalized_at = CASE
        WHEN u.state IN ('completed', 'cancelled', 'discarded') THEN now()
        WHEN u.state IN ('retryable', 'scheduled', 'available')
            AND j.metadata ? 'cancel_attempted_at' AND NOT u.snoozed THEN now()
    END,
    scheduled_at = coalesce(u.scheduled_at, j.scheduled_at),
    attempt = j.attempt - u.give_back,
    errors = CASE WHEN u.error IS NULL THEN j.errors
        ELSE array_append(j.errors, u.error) END,
    metadata = CASE
        WHEN u.snoozed THEN (j.metadata || coalesce(u.metadata, '{}'::jsonb))
            || jsonb_build_object('snoozes',
                coalesce((j.metadata ->> 'snoozes')::int, 0) + 1)
        WHEN u.metadata IS NULL THEN j.metadata
        ELSE j.metadata || u.metadata
    END
FROM unnest(
    $1::bigint[], $2::smallint[], $3::text[], $4::timestamptz[], $5::jsonb[],
    $6::jsonb[], $7::smallint[], $8::bool[], $9::timestamptz[]
) AS u(id, attempt, state, scheduled_at, error, metadata, give_back, snoozed, attempted_at)
-- Found by primary key and guarded by the claim, as in job_complete_many.
WHERE j.id = u.id
    AND j.state::text = 'running' AND j.attempt = u.attempt
    AND j.attempted_at = u.attempted_at
RETURNING j.id, j.queue, j.state
),
notified AS (
    SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM updated WHERE state = 'available') AS q
)
SELECT updated.id FROM updated, notified;

-- name: job_release_orphans
-- Jobs of queue $1 that this client ($2) claimed but does not hold (not running, no
-- outcome waiting: $3): a claim whose reply was lost with its connection. They never
-- ran here, so they go back as they were, attempt restored.
WITH released AS (
    UPDATE {schema}.river_job
    SET state = 'available', attempt = greatest(attempt - 1, 0)
    WHERE state = 'running'
        AND queue = $1::text
        AND attempted_by[array_upper(attempted_by, 1)] = $2::text
        AND NOT (id = ANY($3::bigint[]))
    RETURNING queue
)
SELECT count(*) FROM released;

-- name: job_get
SELECT {job_columns} FROM {schema}.river_job WHERE id = $1::bigint;

-- name: queue_is_paused
SELECT paused_at IS NOT NULL FROM {schema}.river_queue WHERE name = $1::text;

-- name: job_cancel
-- Cancel one job. Not yet running: it ends `cancelled` at once. Running: it stays
-- `running`, records when cancellation was asked, and a control message tells the
-- process that runs it to cancel its coroutine. Finalized: unchanged.
WITH locked AS (
    SELECT id, queue, state
    FROM {schema}.river_job
    WHERE id = $1::bigint
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
SELECT u.* FROM updated AS u, notified
UNION ALL
SELECT {job_columns} FROM {schema}.river_job
WHERE id = $1::bigint AND NOT EXISTS (SELECT 1 FROM updated);

-- name: queue_pause
-- Pause one queue ($1) or every queue ('*'): persisted, then announced.
WITH upserted AS (
    INSERT INTO {schema}.river_queue (name, paused_at, updated_at)
    SELECT $1::text, now(), now() WHERE $1::text <> '*'
    ON CONFLICT (name) DO UPDATE
        SET paused_at = coalesce({schema}.river_queue.paused_at, now()), updated_at = now()
    RETURNING name
),
every AS (
    UPDATE {schema}.river_queue SET paused_at = coalesce(paused_at, now()), updated_at = now()
    WHERE $1::text = '*'
    RETURNING name
)
SELECT pg_notify({control_channel},
    json_build_object('action', 'pause', 'queue', $1::text)::text),
    (SELECT count(*) FROM upserted) + (SELECT count(*) FROM every);

-- name: queue_resume
WITH upserted AS (
    INSERT INTO {schema}.river_queue (name, paused_at, updated_at)
    SELECT $1::text, NULL, now() WHERE $1::text <> '*'
    ON CONFLICT (name) DO UPDATE SET paused_at = NULL, updated_at = now()
    RETURNING name
),
every AS (
    UPDATE {schema}.river_queue SET paused_at = NULL, updated_at = now()
    WHERE $1::text = '*'
    RETURNING name
)
SELECT pg_notify({control_channel},
    json_build_object('action', 'resume', 'queue', $1::text)::text),
    (SELECT count(*) FROM upserted) + (SELECT count(*) FROM every);

-- name: queue_paused_many
SELECT name FROM {schema}.river_queue WHERE name = ANY($1::text[]) AND paused_at IS NOT NULL;
