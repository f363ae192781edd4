-- Queries on river_job. JSON travels as text both ways (`@x::text::jsonb` in, job
-- columns cast to text out), so a JSON codec an application registered on its own
-- connections never re-encodes ours. Placeholders, replaced once per schema by queries.py:
-- `{schema}` the quoted schema, `{job_columns}` / `{job_columns_j}` the columns a
-- Job is decoded from (rows.py, JOB_COLUMNS), `{insert_channel}` and
-- `{control_channel}` the quoted NOTIFY channels. `@name` is a bind parameter,
-- rendered per driver ($1.. for asyncpg, %(name)s for psycopg): no query is ever
-- built from user text.

-- name: job_insert
-- One statement: insert (or find the unique duplicate), and wake the queue's
-- producers. Postgres folds identical notifications of one transaction into one,
-- so a transaction inserting many jobs sends one wake-up per queue.
WITH inserted AS (
    INSERT INTO {schema}.river_job AS existing (
        args, kind, max_attempts, metadata, priority, queue, scheduled_at, state,
        tags, unique_key, unique_states
    )
    SELECT @args::text::jsonb, @kind::text, @max_attempts::smallint, @metadata::text::jsonb,
        @priority::smallint, @queue::text, s.at,
        CASE WHEN s.at > now() THEN 'scheduled' ELSE 'available' END::{schema}.river_job_state,
        @tags::varchar(255)[], @unique_key::bytea, @unique_states::int::bit(8)
    FROM (SELECT coalesce(@scheduled_at::timestamptz, now()) AS at) AS s
    {_unique_conflict}
    RETURNING {job_columns}, (xmax <> 0) AS skipped
)
SELECT inserted.*,
    CASE WHEN inserted.state = 'available' AND (NOT inserted.skipped OR @on_conflict::int <> 0)
        THEN pg_notify({insert_channel}, json_build_object('queue', inserted.queue)::text)
    END IS NULL AS _n
FROM inserted;

-- name: job_insert_many
-- Many rows in one statement from parallel arrays; one wake-up per queue. The rows
-- of one statement share their UniqueOpts.on_conflict (@on_conflict): the caller
-- sends rows with other settings in a statement of their own.
-- Ids are drawn up front, in input order, so that each new row is matched back to
-- its input by `ord`; a unique duplicate comes back as the existing row (skipped,
-- no `ord`) and is matched by its unique key.
WITH input AS MATERIALIZED (
    SELECT nextval(@sequence::regclass) AS id, a.*, coalesce(a.sched, now()) AS at
    FROM unnest(
        @args::text[]::jsonb[], @kind::text[], @max_attempts::smallint[],
        @metadata::text[]::jsonb[],
        @priority::smallint[], @queue::text[], @scheduled_at::timestamptz[], @tags::text[],
        @unique_key::bytea[], @unique_states::int[]
    ) WITH ORDINALITY
        AS a(args, kind, max_attempts, metadata, priority, queue, sched, tags, unique_key,
            unique_states, ord)
),
inserted AS (
    INSERT INTO {schema}.river_job AS existing (
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
    {_unique_conflict}
    RETURNING {job_columns}, (xmax <> 0) AS skipped
),
notified AS (
    SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM inserted
        WHERE state = 'available' AND (NOT skipped OR @on_conflict::int <> 0)) AS q
)
SELECT i.*, input.ord
FROM inserted AS i
    LEFT JOIN input ON input.id = i.id AND NOT i.skipped
    CROSS JOIN notified;

-- name: job_notify_queues
-- The wake-ups of the COPY path: one per queue given.
SELECT count(pg_notify({insert_channel}, json_build_object('queue', q)::text))
FROM unnest(@queues::text[]) AS q;

-- name: job_copy_from_stdin
-- The COPY path for drivers that send the COPY statement themselves (psycopg; asyncpg's
-- copy_records_to_table writes its own). The columns are records.COPY_COLUMNS, in order.
COPY {schema}.river_job (
    id, args, kind, max_attempts, metadata, priority, queue, scheduled_at, created_at,
    state, tags
) FROM STDIN;

-- name: job_next_ids
-- The COPY fast path's one statement before the COPY: @n ids, the database's clock,
-- and the wake-ups. @queues are the batch's queues and @first_at the earliest
-- scheduled_at of each (NULL: now); a queue whose first job is due is notified.
-- NOTIFY is delivered at commit, so it may precede the rows it announces inside the
-- transaction. The caller sorts the ids (an ORDER BY here cost a quarter of the
-- statement's time).
SELECT
    (SELECT array_agg(nextval(@sequence::regclass)) FROM generate_series(1, @n::int)) AS ids,
    now() AS now,
    (SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text))
        FROM unnest(@queues::text[], @first_at::timestamptz[]) AS q(queue, first_at)
        WHERE q.first_at IS NULL OR q.first_at <= now()
    ) AS notified;

-- name: job_claim
-- The claim: lock up to @limit available jobs of one queue in priority order,
-- skipping rows other producers hold, and mark them running in the same statement.
-- `id = ANY(ARRAY(...))` keeps the plan an index scan on
-- river_job_prioritized_fetching_index (`id IN (SELECT ...)` was planned as a hash join).
-- A paused queue (river_queue.paused_at set) yields nothing, whatever a producer believes.
-- @kinds (NULL: every kind) is kind-aware claiming: a client claims only the kinds it
-- has workers for, so that in a rolling deploy an old worker leaves a new kind to the
-- new ones (a filter on rows the index scan reads anyway; measured to cost nothing
-- visible, see docs/flow-control.md). Jobs in a sequence (metadata
-- `pyriver:sequence`) are left to flow_claim, which checks their order.
{_claim_head}
{_claim_tail};

-- name: job_claim_after
-- job_claim from a position on: the jobs after (@after_priority, @after_scheduled_at,
-- @after_id) in claim order, a range of the same index. While a queue has a backlog
-- its producer claims from where its last claim ended, so that a claim does not walk,
-- from the head of the index, the entries of every job claimed since the vacuum
-- horizon was last able to move (one old transaction pins it: each of those entries
-- costs a heap visit, and the cost of a claim would grow with the work done). Jobs
-- that become available behind the position (due retries, rescues) are claimed by the
-- producer's full claim, run at least once a second and whenever this one comes up
-- short (pyriver_async/_claim.py).
{_claim_head}
        AND (priority, scheduled_at, id)
            > (@after_priority::smallint, @after_scheduled_at::timestamptz, @after_id::bigint)
{_claim_tail};

-- name: _claim_head
-- (A fragment of the two claims: the UPDATE, and the available jobs of the queue.)
UPDATE {schema}.river_job AS j
SET state = 'running',
    attempt = j.attempt + 1,
    attempted_at = now(),
    attempted_by = {_attempted_by_appended}
WHERE j.id = ANY(ARRAY(
    SELECT id
    FROM {schema}.river_job
    WHERE state = 'available'
        AND queue = @queue::text
        AND scheduled_at <= now()
        AND (@kinds::text[] IS NULL OR kind = ANY(@kinds::text[]))
        AND NOT metadata ? 'pyriver:sequence'
        AND NOT EXISTS (
            SELECT 1 FROM {schema}.river_queue
            WHERE name = @queue::text AND paused_at IS NOT NULL
        )

-- name: _claim_tail
-- (A fragment of the two claims: claim order, the batch, skip what others hold.)
    ORDER BY priority, scheduled_at, id
    LIMIT @limit::int
    FOR UPDATE SKIP LOCKED
))
RETURNING {job_columns_j}

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
--
-- A job someone waits for (`client.wait`, which sets `pyriver:wait` in its metadata)
-- gets a `finished` message on the control channel, sent at commit.
WITH done AS (
UPDATE {schema}.river_job AS j
SET state = 'completed', finalized_at = now()
FROM unnest(@id::bigint[], @attempt::smallint[], @attempted_at::timestamptz[])
    AS u(id, attempt, attempted_at)
WHERE j.id = u.id
    AND j.state::text = 'running' AND j.attempt = u.attempt
    AND j.attempted_at = u.attempted_at
RETURNING j.id, j.metadata ? 'pyriver:wait' AS waited
),
finished AS (
    SELECT count(pg_notify({control_channel},
        json_build_object('action', 'finished', 'job_id', d.id)::text)) AS n
    FROM done AS d
    WHERE d.waited
)
SELECT done.id FROM done, finished;

-- name: job_delete_completed_many
-- Ephemeral jobs that returned normally are deleted instead of updated: a DELETE
-- writes no new row version and no index entry. Guarded by the claim as above.
DELETE FROM {schema}.river_job AS j
USING unnest(@id::bigint[], @attempt::smallint[], @attempted_at::timestamptz[])
    AS u(id, attempt, attempted_at)
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
    @id::bigint[], @attempt::smallint[], @state::text[], @scheduled_at::timestamptz[],
    @error::text[]::jsonb[], @metadata::text[]::jsonb[], @give_back::smallint[],
    @snoozed::bool[],
    @attempted_at::timestamptz[]
) AS u(id, attempt, state, scheduled_at, error, metadata, give_back, snoozed, attempted_at)
-- Found by primary key and guarded by the claim, as in job_complete_many.
WHERE j.id = u.id
    AND j.state::text = 'running' AND j.attempt = u.attempt
    AND j.attempted_at = u.attempted_at
RETURNING j.id, j.queue, j.state, j.metadata ? 'pyriver:wait' AS waited
),
notified AS (
    SELECT count(pg_notify({insert_channel}, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM updated WHERE state = 'available') AS q
),
-- Finalized jobs someone waits for, as in job_complete_many.
finished AS (
    SELECT count(pg_notify({control_channel},
        json_build_object('action', 'finished', 'job_id', u.id)::text)) AS n
    FROM updated AS u
    WHERE u.waited AND u.state IN ('completed', 'cancelled', 'discarded')
)
-- The state written, which may differ from the one asked (cancellation requested).
SELECT updated.id, updated.state::text FROM updated, notified, finished;

-- name: job_release_orphans
-- Jobs of @queue that this client claimed but does not hold (not running, no
-- outcome waiting: @keep): a claim whose reply was lost with its connection. They
-- never ran here, so they go back as they were, attempt restored.
WITH released AS (
    UPDATE {schema}.river_job
    SET state = 'available', attempt = greatest(attempt - 1, 0)
    WHERE state = 'running'
        AND queue = @queue::text
        AND attempted_by[array_upper(attempted_by, 1)] = @client_id::text
        AND NOT (id = ANY(@keep::bigint[]))
    RETURNING queue
)
SELECT count(*) FROM released;

-- name: job_get
SELECT {job_columns} FROM {schema}.river_job WHERE id = @id::bigint;

-- name: job_mark_waited
-- (client.wait) Mark an unfinished job as waited for, so that the statement that
-- finalizes it, in whichever process, sends a `finished` message; the job as it now
-- is (unchanged when finalized already or marked before).
WITH marked AS (
    UPDATE {schema}.river_job AS j
    SET metadata = j.metadata || '{"pyriver:wait": true}'::jsonb
    WHERE j.id = @id::bigint
        AND j.state NOT IN ('cancelled', 'completed', 'discarded')
        AND NOT (j.metadata ? 'pyriver:wait')
    RETURNING {job_columns_j}
)
SELECT m.* FROM marked AS m
UNION ALL
SELECT {job_columns} FROM {schema}.river_job
WHERE id = @id::bigint AND NOT EXISTS (SELECT 1 FROM marked);

-- name: job_cancel
-- Cancel one job. Not yet running: it ends `cancelled` at once. Running: it stays
-- `running`, records when cancellation was asked, and a control message tells the
-- process that runs it to cancel its coroutine. Finalized: unchanged.
WITH locked AS (
    SELECT id, queue, state
    FROM {schema}.river_job
    WHERE id = @id::bigint
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
WHERE id = @id::bigint AND NOT EXISTS (SELECT 1 FROM updated);

-- name: job_schedule
-- Due `scheduled` and `retryable` jobs become `available`, up to @limit per
-- statement, with one wake-up per queue that received any.
--
-- Unique jobs: a `retryable` job whose unique_states leave `retryable` out is not in
-- the unique index; making it `available` puts it back, which fails if another job
-- with its key got in meanwhile. Such a job is discarded instead (River's
-- `unique_key_conflict: scheduler_discarded`), and among several of this batch
-- returning with one key, only the first gets in. Jobs already in the index keep
-- their place (`available` is in every unique_states), so they never conflict.
-- The locked picks are MATERIALIZED: evaluated once, never rescanned by a join.
--
-- Finding the due jobs: river_job_prioritized_fetching_index is (state, queue,
-- priority, scheduled_at, id), so `state IN (...) AND scheduled_at <= now()` alone
-- cannot bound a scan by time (queue and priority come first): the planner read
-- every waiting job, 134 ms a pass with 1,000,000 jobs scheduled in the future,
-- every second. Instead `queues` walks the index for the distinct queues of each
-- state (one descent per queue), and each (state, queue, priority) is a range scan
-- that stops at the first job not yet due: 0.09 ms for the same table (priority is
-- 1 to 4 by the table's CHECK constraint).
--
-- The picks are taken in the loop's order (state, queue, priority, due time), with no
-- ORDER BY over all of them: the planner guesses ~200 queues for `queues` and @limit
-- rows for each (state, queue, priority), so a sort of them all was costed at
-- 138,000 with 20,000 jobs in the table, over jit_above_cost (100,000), and
-- PostgreSQL's default jit = on JIT-compiled this once-a-second statement on every
-- pass: 35 ms alone, 270-640 ms of CPU while workers drained a backlog (a quarter of
-- the drain's throughput). A LIMIT over the loop is costed at a share of it. The
-- order is not a promise anyway: a pass repeats until a batch comes back short, so
-- every job due now is made available within the same pass, and producers claim by
-- (priority, scheduled_at, id) from there.
WITH RECURSIVE queues AS (
    SELECT s.state, (SELECT min(queue) FROM {schema}.river_job WHERE state = s.state) AS queue
    FROM unnest('{retryable,scheduled}'::{schema}.river_job_state[]) AS s(state)
    UNION ALL
    SELECT q.state,
        (SELECT min(queue) FROM {schema}.river_job WHERE state = q.state AND queue > q.queue)
    FROM queues AS q
    WHERE q.queue IS NOT NULL
),
due AS MATERIALIZED (
    SELECT id, unique_key, unique_states, priority, scheduled_at,
        (unique_key IS NOT NULL AND unique_states IS NOT NULL
            AND NOT {schema}.river_job_state_in_bitmask(unique_states, state)) AS reenters_index
    FROM {schema}.river_job
    WHERE id = ANY(ARRAY(
            SELECT p.id
            FROM queues AS q
                CROSS JOIN generate_series(1, 4) AS pr(priority)
                CROSS JOIN LATERAL (
                    SELECT id, priority, scheduled_at
                    FROM {schema}.river_job
                    WHERE state = q.state AND queue = q.queue AND priority = pr.priority
                        AND scheduled_at <= now()
                    ORDER BY scheduled_at, id
                    LIMIT @limit::int
                ) AS p
            WHERE q.queue IS NOT NULL
            LIMIT @limit::int
        ))
        -- Checked again on the locked row: it may have changed since the pick.
        AND state IN ('retryable', 'scheduled')
        AND scheduled_at <= now()
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

-- name: job_rescue
-- Running jobs that nobody is working any more, up to @limit per statement:
--   - the client that claimed it (last of attempted_by) has a liveness row that
--     has not beaten for @dead_after seconds (a client with no row, such as a River
--     Go process, is never judged this way), or
--   - it has been running for @stuck_after seconds, whoever holds it (the backstop).
-- Each goes back to `retryable` to run again at once, or ends `discarded` when it
-- has no attempt left, or `cancelled` when cancellation was asked while it ran.
-- The attempt counter is left as is; an error in River's shape records the rescue.
WITH stuck AS MATERIALIZED (
    -- Locked rows are read in their latest version, so the decision below sees a
    -- cancellation asked a moment ago.
    SELECT j.id,
        {_rescue_new_state} AS new_state,
        CASE
            WHEN c.id IS NULL THEN format('running for longer than %s seconds', @stuck_after::float8)
            WHEN c.heartbeat_at = '-infinity' THEN format('client %s stopped', c.id)
            ELSE format('client %s stopped heart-beating %s seconds ago', c.id,
                round(extract(epoch FROM now() - c.heartbeat_at)::numeric, 1))
        END AS reason
    FROM {schema}.river_job AS j
    LEFT JOIN {schema}.pyriver_client AS c
        ON c.id = j.attempted_by[cardinality(j.attempted_by)]
        AND c.heartbeat_at < now() - make_interval(secs => @dead_after::float8)
    WHERE j.state = 'running'
        AND (c.id IS NOT NULL OR j.attempted_at < now() - make_interval(secs => @stuck_after::float8))
    ORDER BY j.id
    LIMIT @limit::int
    FOR UPDATE OF j SKIP LOCKED
),
{_rescue_apply}

-- name: job_rescue_by_age
-- job_rescue for a schema without the liveness table (a database River migrated):
-- every running job is judged by age alone.
WITH stuck AS MATERIALIZED (
    SELECT j.id,
        {_rescue_new_state} AS new_state,
        format('running for longer than %s seconds', @stuck_after::float8) AS reason
    FROM {schema}.river_job AS j
    WHERE j.state = 'running'
        AND j.attempted_at < now() - make_interval(secs => @stuck_after::float8)
    ORDER BY j.id
    LIMIT @limit::int
    FOR UPDATE OF j SKIP LOCKED
),
{_rescue_apply}

-- name: _rescue_new_state
-- (A fragment of the two rescue queries.) Cancellation asked while it ran wins; no
-- attempt left discards it; otherwise it runs again.
(CASE
    WHEN j.metadata ? 'cancel_attempted_at' THEN 'cancelled'
    WHEN j.attempt >= j.max_attempts THEN 'discarded'
    ELSE 'retryable'
END)::{schema}.river_job_state

-- name: _rescue_apply
-- (A fragment of the two rescue queries: `stuck` holds id, new_state and reason.)
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

-- name: job_clean
-- Up to @limit finalized jobs in @state older than @older_than seconds, picked by id
-- so that each statement holds its locks briefly. `id = ANY(ARRAY(...))` evaluates
-- the pick once (as `id IN (SELECT ...)` the planner may rescan it, and each rescan
-- skips the rows already deleted and locks the next ones, overrunning the limit).
-- The outer conditions are checked again on a row changed meanwhile (a job retried
-- from the UI is not deleted).
DELETE FROM {schema}.river_job
WHERE id = ANY(ARRAY(
        SELECT id
        FROM {schema}.river_job
        WHERE state = @state::text::{schema}.river_job_state
            AND finalized_at < now() - make_interval(secs => @older_than::float8)
        ORDER BY id
        LIMIT @limit::int
        FOR UPDATE SKIP LOCKED
    ))
    AND state = @state::text::{schema}.river_job_state
    AND finalized_at < now() - make_interval(secs => @older_than::float8);

-- name: _unique_conflict
-- A unique duplicate of the inserted row (River's partial unique index is the
-- arbiter) is returned, not inserted; UniqueOpts.on_conflict (@on_conflict bits:
-- 1 reschedule_earlier, 2 raise_priority) moves it while it still waits.
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL
            AND {schema}.river_job_state_in_bitmask(unique_states, state)
        DO UPDATE SET kind = EXCLUDED.kind,
            scheduled_at = CASE
                WHEN (@on_conflict::int & 1) = 1
                    AND existing.state IN ('available', 'scheduled', 'retryable')
                    AND EXCLUDED.scheduled_at < existing.scheduled_at
                THEN EXCLUDED.scheduled_at ELSE existing.scheduled_at END,
            state = CASE
                WHEN (@on_conflict::int & 1) = 1
                    AND existing.state IN ('scheduled', 'retryable')
                    AND EXCLUDED.scheduled_at < existing.scheduled_at
                    AND EXCLUDED.scheduled_at <= now()
                THEN 'available'::{schema}.river_job_state ELSE existing.state END,
            priority = CASE
                WHEN (@on_conflict::int & 2) = 2
                    AND existing.state IN ('available', 'scheduled', 'retryable')
                    AND EXCLUDED.priority < existing.priority
                THEN EXCLUDED.priority ELSE existing.priority END

-- name: _attempted_by_appended
-- A claim's new attempted_by: the claiming client appended, the oldest entry dropped
-- past 100 (River's rule, so the array never grows without bound).
CASE
    WHEN coalesce(array_length(j.attempted_by, 1), 0) >= 100
        THEN array_append(j.attempted_by[2:], @client_id::text)
    ELSE array_append(j.attempted_by, @client_id::text)
END
