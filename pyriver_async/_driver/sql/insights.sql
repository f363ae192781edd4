-- Read-only insights for dashboards and the web UI (pyriver_async/_insights.py).
--
-- Every query here is bounded: it names the index that serves it and how much of it
-- it may visit, so that a UI open in many tabs costs the database little whatever
-- the size of river_job. The plan tests (tests/ui/test_plans.py) hold each to that
-- on a table of a million rows. States travel as text and are cast here, so that the
-- driver never has to introspect the enum type.

-- name: insights_state_counts
-- Jobs per state, each count stopping at @cap (callers pass their cap + 1 to tell
-- "exactly cap" from "more"): at most @cap entries of the fetch index per state.
SELECT st.state::text AS state,
    (SELECT count(*) FROM (
        SELECT 1 FROM {schema}.river_job AS j WHERE j.state = st.state LIMIT @cap::int
    ) AS x) AS n
FROM unnest(@states::text[]::{schema}.river_job_state[]) AS st(state);

-- name: insights_final_window
-- Jobs finalized since @since, per finalized state: one range of the cleaner's
-- (state, finalized_at) index per state. The planner proves a partial index's
-- predicate only from the query, so `finalized_at IS NOT NULL` is written out.
SELECT j.state::text AS state, count(*) AS n
FROM {schema}.river_job AS j
WHERE j.state IN ('completed', 'cancelled', 'discarded')
    AND j.finalized_at IS NOT NULL
    AND j.finalized_at >= @since::timestamptz
GROUP BY j.state;

-- name: insights_estimate
-- The planner's idea of the table: its row count and the state column's most common
-- values with their frequencies (catalogs only, no table access). reltuples is -1
-- before the first ANALYZE.
SELECT c.reltuples::float8 AS reltuples,
    s.most_common_vals::text::text[] AS states,
    s.most_common_freqs::float8[] AS freqs
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stats AS s
    ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'state'
WHERE n.nspname = @schema::text AND c.relname = 'river_job';

-- name: insights_max_id
-- The newest id (one entry of the primary key, read backward): deltas between two
-- readings approximate how many jobs were inserted.
SELECT max(id) AS max_id FROM {schema}.river_job;

-- name: insights_throughput
-- Jobs finalized in [@since, @until) per state and per bin of @bin seconds, read from
-- the (state, finalized_at) index alone (index-only when the visibility map allows).
SELECT j.state::text AS state,
    to_timestamp(floor(extract(epoch FROM j.finalized_at) / @bin::float8) * @bin::float8)
        AS bin,
    count(*) AS n
FROM {schema}.river_job AS j
WHERE j.state IN ('completed', 'cancelled', 'discarded')
    AND j.finalized_at IS NOT NULL
    AND j.finalized_at >= @since::timestamptz
    AND j.finalized_at < @until::timestamptz
GROUP BY 1, 2;

-- name: insights_breakdown
-- Jobs finalized in [@since, @until) per minute, queue, kind and state, with their
-- run time (attempted_at to finalized_at) and wait time (scheduled_at to
-- attempted_at) placed in the buckets @bounds (milliseconds; width_bucket's
-- numbering; NULL for a job that never ran). The newest @limit rows at most: above
-- that the caller marks the window as sampled.
SELECT to_timestamp(floor(extract(epoch FROM w.finalized_at) / 60) * 60) AS minute,
    w.queue, w.kind, w.state::text AS state,
    width_bucket(extract(epoch FROM w.finalized_at - w.attempted_at) * 1000,
        @bounds::float8[]) AS run_bucket,
    width_bucket(extract(epoch FROM w.attempted_at - w.scheduled_at) * 1000,
        @bounds::float8[]) AS wait_bucket,
    count(*) AS n
FROM (
    SELECT j.queue, j.kind, j.state, j.finalized_at, j.attempted_at, j.scheduled_at
    FROM {schema}.river_job AS j
    WHERE j.state IN ('completed', 'cancelled', 'discarded')
        AND j.finalized_at IS NOT NULL
        AND j.finalized_at >= @since::timestamptz
        AND j.finalized_at < @until::timestamptz
    ORDER BY j.finalized_at DESC
    LIMIT @limit::int
) AS w
GROUP BY 1, 2, 3, 4, 5, 6;

-- name: insights_queue_states
-- Every distinct (state, queue) pair, by a loose scan of the fetch index (state,
-- queue, ...): one descent per pair instead of a walk over every job.
WITH RECURSIVE p(state, queue) AS (
    (SELECT j.state, j.queue FROM {schema}.river_job AS j ORDER BY j.state, j.queue LIMIT 1)
    UNION ALL
    SELECT nxt.state, nxt.queue
    FROM p
    CROSS JOIN LATERAL (
        SELECT j.state, j.queue FROM {schema}.river_job AS j
        WHERE (j.state, j.queue) > (p.state, p.queue)
        ORDER BY j.state, j.queue
        LIMIT 1
    ) AS nxt
)
SELECT state::text AS state, queue FROM p LIMIT @limit::int;

-- name: insights_queues
-- The queue table (pause state, metadata).
SELECT name, created_at, metadata::text AS metadata, paused_at, updated_at
FROM {schema}.river_queue
ORDER BY name
LIMIT 1000;

-- name: insights_queue_counts
-- Jobs per (queue, active state), each count stopping at @cap: a prefix range of the
-- fetch index per pair.
SELECT q.name AS queue, st.state::text AS state,
    (SELECT count(*) FROM (
        SELECT 1 FROM {schema}.river_job AS j
        WHERE j.state = st.state AND j.queue = q.name
        LIMIT @cap::int
    ) AS x) AS n
FROM unnest(@queues::text[]) AS q(name)
CROSS JOIN unnest('{available,pending,retryable,running,scheduled}'::{schema}.river_job_state[])
    AS st(state);

-- name: insights_queue_lag
-- The oldest due available job of each queue: one entry of the fetch index per
-- (queue, priority), the first in scheduled_at order.
SELECT q.name AS queue, min(x.scheduled_at) AS oldest
FROM unnest(@queues::text[]) AS q(name)
CROSS JOIN unnest('{1,2,3,4}'::smallint[]) AS p(priority)
CROSS JOIN LATERAL (
    SELECT j.scheduled_at FROM {schema}.river_job AS j
    WHERE j.state = 'available' AND j.queue = q.name AND j.priority = p.priority
        AND j.scheduled_at <= now()
    ORDER BY j.scheduled_at
    LIMIT 1
) AS x
GROUP BY q.name;

-- name: insights_scheduler_lag
-- The oldest scheduled or retryable job that was due more than @lag seconds ago, per
-- queue: the scheduler should have made it available by now. One entry per (state,
-- queue, priority).
SELECT q.name AS queue, min(x.scheduled_at) AS oldest
FROM unnest(@queues::text[]) AS q(name)
CROSS JOIN unnest('{scheduled,retryable}'::{schema}.river_job_state[]) AS st(state)
CROSS JOIN unnest('{1,2,3,4}'::smallint[]) AS p(priority)
CROSS JOIN LATERAL (
    SELECT j.scheduled_at FROM {schema}.river_job AS j
    WHERE j.state = st.state AND j.queue = q.name AND j.priority = p.priority
        AND j.scheduled_at < now() - make_interval(secs => @lag::float8)
    ORDER BY j.scheduled_at
    LIMIT 1
) AS x
GROUP BY q.name;

-- name: insights_cleaner_lag
-- The oldest row of each finalized state: one entry of the (state, finalized_at) index.
SELECT st.state::text AS state,
    (SELECT min(j.finalized_at) FROM {schema}.river_job AS j
        WHERE j.state = st.state AND j.finalized_at IS NOT NULL) AS oldest
FROM unnest('{completed,cancelled,discarded}'::{schema}.river_job_state[]) AS st(state);

-- name: insights_kinds
-- Every distinct kind by a loose scan of the kind index: one descent per kind.
WITH RECURSIVE k(kind) AS (
    (SELECT j.kind FROM {schema}.river_job AS j ORDER BY j.kind LIMIT 1)
    UNION ALL
    SELECT (SELECT j.kind FROM {schema}.river_job AS j WHERE j.kind > k.kind
            ORDER BY j.kind LIMIT 1)
    FROM k
    WHERE k.kind IS NOT NULL
)
SELECT kind FROM k WHERE kind IS NOT NULL LIMIT @limit::int;

-- name: insights_kind_sample
-- The newest jobs of one kind among the newest @budget completed and discarded rows
-- (of the (state, finalized_at) index, backward), up to @max matches, counted per
-- state and run/wait bucket as insights_breakdown does. Returns the rows examined too.
WITH cand AS MATERIALIZED (
    (SELECT j.id FROM {schema}.river_job AS j
        WHERE j.state = 'completed' AND j.finalized_at IS NOT NULL
        ORDER BY j.finalized_at DESC LIMIT @budget::int)
    UNION ALL
    (SELECT j.id FROM {schema}.river_job AS j
        WHERE j.state = 'discarded' AND j.finalized_at IS NOT NULL
        ORDER BY j.finalized_at DESC LIMIT @budget::int)
),
hit AS (
    SELECT j.state, j.finalized_at, j.attempted_at, j.scheduled_at
    FROM cand JOIN {schema}.river_job AS j ON j.id = cand.id
    WHERE j.kind = @kind::text AND j.attempted_at IS NOT NULL
    LIMIT @max::int
)
SELECT h.state::text AS state,
    width_bucket(extract(epoch FROM h.finalized_at - h.attempted_at) * 1000,
        @bounds::float8[]) AS run_bucket,
    width_bucket(extract(epoch FROM h.attempted_at - h.scheduled_at) * 1000,
        @bounds::float8[]) AS wait_bucket,
    count(*) AS n,
    (SELECT count(*) FROM cand) AS examined
FROM hit AS h
GROUP BY 1, 2, 3;

-- name: insights_claim_order
-- The available jobs of one queue in exactly the order the producer claims them
-- (priority, scheduled_at, id: the fetch index's own order, so no sort), after the
-- cursor (@priority, @scheduled_at, @id; NULL: from the start).
SELECT {job_columns}
FROM {schema}.river_job
WHERE state = 'available' AND queue = @queue::text
    AND (@id::bigint IS NULL
        OR (priority, scheduled_at, id) > (@priority::smallint, @scheduled_at::timestamptz, @id::bigint))
ORDER BY priority, scheduled_at, id
LIMIT @limit::int;

-- name: insights_job_documents
-- One job's JSON documents as text (jsonb keeps numbers exact) with their sizes: the
-- text's when it is at most @max_bytes long, else the stored (maybe compressed) size
-- and no text (the caller offers a download instead of inlining it). A document
-- stored larger than @max_bytes is never turned into text here.
SELECT coalesce(octet_length(a.t), pg_column_size(j.args)) AS args_bytes,
    CASE WHEN octet_length(a.t) <= @max_bytes::int THEN a.t END AS args,
    coalesce(octet_length(m.t), pg_column_size(j.metadata)) AS metadata_bytes,
    CASE WHEN octet_length(m.t) <= @max_bytes::int THEN m.t END AS metadata
FROM {schema}.river_job AS j
LEFT JOIN LATERAL (SELECT j.args::text AS t WHERE pg_column_size(j.args) <= @max_bytes::int)
    AS a ON true
LEFT JOIN LATERAL (
    SELECT j.metadata::text AS t WHERE pg_column_size(j.metadata) <= @max_bytes::int
) AS m ON true
WHERE j.id = @id::bigint;

-- name: insights_job_document_full
-- One job's args or metadata as text, whatever its size (downloads).
SELECT CASE WHEN @which::text = 'args' THEN j.args::text ELSE j.metadata::text END AS doc
FROM {schema}.river_job AS j
WHERE j.id = @id::bigint;

-- name: insights_unique_conflict
-- The job that holds the unique slot a retry of job @id would need: the unique
-- index's predicate repeated verbatim so that the planner can use it.
SELECT j.id, j.state::text AS state
FROM {schema}.river_job AS j
WHERE j.unique_key = @unique_key::bytea
    AND j.unique_states IS NOT NULL
    AND {schema}.river_job_state_in_bitmask(j.unique_states, j.state)
    AND j.id <> @id::bigint
LIMIT 1;

-- name: insights_discarded_errors
-- The last error of the newest @limit jobs discarded since @since (the (state,
-- finalized_at) index backward), its message cut at 500 characters and skipped when
-- the errors array is huge.
SELECT j.id, j.kind, j.queue, 'discarded' AS state, j.finalized_at AS at,
    CASE WHEN pg_column_size(j.errors) <= 65536 THEN
        left((j.errors[array_length(j.errors, 1)])->>'error', 500) END AS error
FROM {schema}.river_job AS j
WHERE j.state = 'discarded'
    AND j.finalized_at IS NOT NULL AND j.finalized_at >= @since::timestamptz
ORDER BY j.finalized_at DESC
LIMIT @limit::int;

-- name: insights_retryable_errors
-- The same for retryable jobs, in the fetch index's order (state first).
SELECT j.id, j.kind, j.queue, 'retryable' AS state, j.scheduled_at AS at,
    CASE WHEN pg_column_size(j.errors) <= 65536 THEN
        left((j.errors[array_length(j.errors, 1)])->>'error', 500) END AS error
FROM {schema}.river_job AS j
WHERE j.state = 'retryable'
LIMIT @limit::int;

-- name: insights_periodic_runs
-- The latest runs of one periodic job, found by its metadata key through River's GIN
-- index on metadata.
SELECT j.id, j.state::text AS state, j.created_at, j.finalized_at
FROM {schema}.river_job AS j
WHERE j.metadata @> @match::jsonb
ORDER BY j.id DESC
LIMIT @limit::int;

-- name: insights_running
-- Running jobs with the client that claimed them (the last attempted_by entry),
-- oldest first: a prefix range of the fetch index, bounded by @limit.
SELECT j.id, j.kind, j.queue, j.attempted_at,
    j.attempted_by[array_length(j.attempted_by, 1)] AS client_id
FROM {schema}.river_job AS j
WHERE j.state = 'running'
ORDER BY j.attempted_at
LIMIT @limit::int;

-- name: insights_liveness_table
-- Whether pyriver_async's liveness table exists (a River-only database has none).
SELECT to_regclass(@table::text) IS NOT NULL AS present;

-- name: insights_clients
-- The liveness rows, with their heartbeat age as the database sees it (infinite for
-- a row its stopping client marked dead with '-infinity').
SELECT c.id, c.hostname, c.pid, c.started_at, c.heartbeat_at, c.queues,
    CASE WHEN isfinite(c.heartbeat_at) THEN extract(epoch FROM now() - c.heartbeat_at)::float8
        ELSE 'Infinity'::float8 END AS age
FROM {schema}.pyriver_client AS c
ORDER BY c.id
LIMIT 1000;

-- name: insights_leader
-- The leader row, with its remaining term (negative: expired).
SELECT l.leader_id, l.elected_at, l.expires_at,
    extract(epoch FROM l.expires_at - now())::float8 AS remaining
FROM {schema}.river_leader AS l;

-- name: insights_table_health
-- river_job's and its indexes' sizes, live and dead row versions, and when it was
-- last vacuumed and analyzed (catalogs and statistics only).
SELECT pg_total_relation_size(c.oid) AS total_bytes,
    pg_relation_size(c.oid) AS table_bytes,
    s.n_live_tup, s.n_dead_tup, s.last_autovacuum, s.last_vacuum, s.last_autoanalyze,
    (SELECT coalesce(json_agg(json_build_object('name', i.relname,
            'bytes', pg_relation_size(i.oid)) ORDER BY i.relname), '[]')::text
        FROM pg_index AS x JOIN pg_class AS i ON i.oid = x.indexrelid
        WHERE x.indrelid = c.oid) AS indexes
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE n.nspname = @schema::text AND c.relname = 'river_job';

-- name: insights_old_xmin
-- Transactions open for longer than @older_than seconds in this database: the ones
-- that hold back the vacuum horizon (dead job rows pile up until they end). The
-- query text shows only to roles that may read other sessions' activity.
SELECT a.pid, a.usename::text AS usename, a.application_name, a.state,
    extract(epoch FROM now() - a.xact_start)::float8 AS age,
    a.backend_xmin IS NOT NULL AS holds_xmin,
    left(a.query, 200) AS query
FROM pg_stat_activity AS a
WHERE a.datname = current_database()
    AND a.xact_start < now() - make_interval(secs => @older_than::float8)
    AND a.pid <> pg_backend_pid()
ORDER BY a.xact_start
LIMIT 5;

-- name: insights_server
-- The server's version and the newest migration of each line.
SELECT current_setting('server_version') AS server_version,
    (SELECT coalesce(json_object_agg(m.line, m.version), '{}')::text
        FROM (SELECT line, max(version) AS version FROM {schema}.river_migration
            GROUP BY line) AS m) AS migrations;

-- name: insights_ping
-- Whether the database answers (health checks).
SELECT 1 AS ok;
