-- Flow control: the claim of a queue with limits, and what the status API reads.
-- Placeholders as in job.sql. The limits of a queue travel as parallel arrays, one
-- element per rule (see pyriver_async/_claim.py, `FlowClaimer`): which kind it covers
-- (NULL: every kind of the queue), where its key comes from, its running cap, and its
-- rate. Limits are counts of `running` rows of river_job; what else is stored lives
-- in pyriver_flow_state (the pyriver migration line): each queue's claim gate, rate
-- buckets and fair turns.

-- name: flow_gate
-- Takes the queue's claim lock for the rest of the transaction: the fallback of a
-- claim that found itself stale (see flow_claim), which then runs again after this,
-- in the same transaction, with a snapshot taken while the lock is held.
INSERT INTO {schema}.pyriver_flow_state AS s (name, key, tat, n)
VALUES (@gate::text, '', now(), 0)
ON CONFLICT (name, key) DO UPDATE SET n = s.n;

-- name: _flow_key
-- (A fragment.) The key of job `x` under rule `r`, as jsonb: null for a rule without
-- a key (the whole scope is one bucket), else an array of the kind (when the rule
-- partitions by kind) and up to three fields of the args or of the metadata. A key
-- computed by a function of the job (src 'fn') was computed by the client for the
-- candidates (@fk: {job id: {rule name: key}}) and is stamped into the metadata of the
-- jobs it claims (`pyriver:flow_key`), where later claims read it. SQL NULL: the job
-- is not limited by this rule (a job whose key function failed, to be failed). The
-- casts to jsonb cost nothing on river_job's columns; rows a claim returned carry
-- args and metadata as text.
(CASE
    WHEN r.src = 'none' THEN 'null'::jsonb
    WHEN r.src = 'fn' THEN coalesce(
        x.metadata::jsonb -> 'pyriver:flow_key' -> r.name, @fk::jsonb -> x.id::text -> r.name)
    ELSE jsonb_build_array(
        CASE WHEN r.with_kind THEN x.kind END,
        (CASE WHEN r.src = 'args' THEN x.args ELSE x.metadata END)::jsonb -> r.f1,
        (CASE WHEN r.src = 'args' THEN x.args ELSE x.metadata END)::jsonb -> r.f2,
        (CASE WHEN r.src = 'args' THEN x.args ELSE x.metadata END)::jsonb -> r.f3)
END)

-- name: _flow_rules
-- (A fragment.) The rules of this claim, numbered from 1.
SELECT * FROM unnest(
    @r_kind::text[], @r_src::text[], @r_with_kind::bool[], @r_f1::text[], @r_f2::text[],
    @r_f3::text[], @r_name::text[], @r_cap::int[], @r_local::bool[], @r_rate_t::float8[],
    @r_rate_tau::float8[]
) WITH ORDINALITY AS r(kind, src, with_kind, f1, f2, f3, name, cap, local, rate_t, rate_tau, i)

-- name: flow_claim
-- The claim of a queue with limits: one statement, exact across processes.
--
-- 0. `gate`: the queue's claim lock. Upserting the queue's gate row locks it until
--    this statement's transaction ends, so claims of the queue run one at a time; its
--    counter `n` counts them. The statement's snapshot was taken before the lock was
--    held: if a claim committed in between (the counter moved since the snapshot),
--    the counts below may be stale, and the statement claims nothing and says so
--    (`_stale`); the client runs it again behind flow_gate (in a transaction, with a
--    fresh snapshot). An uncontended claim costs one statement.
-- 1. `used`: the running jobs of the queue, per rule and key (the jobs this client has
--    finished but whose outcome is not written yet, @done, are not running any more).
-- 2. `blocked`: the buckets with no room left (running cap reached, or a rate limit's
--    bucket empty). The scan of available jobs skips their jobs, so jobs over a limit
--    stay `available`, are never claimed, and do not hide the jobs behind them.
-- 3. `cand`: up to @window available jobs, in priority order, not blocked; a job in a
--    sequence only when it is the sequence's head.
-- 4. the pick: per key, jobs in order while its bucket has room (rules with a key
--    first, then each kind's caps, then the queue's caps and @limit free slots here);
--    with fairness, keys take turns (see `turns`).
-- 5. the picked jobs are locked (SKIP LOCKED) and marked running, and each rate
--    bucket used is charged for the jobs it started (GCRA: the bucket's theoretical
--    arrival time moves on by one emission interval per start).
-- A last row with a NULL id tells the producer what it saw: whether it was stale, how
-- many candidates, whether some bucket was blocked, and when the earliest empty rate
-- bucket refills. Times are the moment the gate was passed (`fresh.now`).
--
-- Inner LIMITs with constants (2000) keep the generic plan's estimates small, so the
-- plan is prepared once and reused: a custom plan per claim cost ~2 ms of planning,
-- and with unbounded row estimates the generic plan looked costly enough for JIT
-- compilation (~130 ms a claim).
WITH {_flow_gate_passed},
rules AS MATERIALIZED (
    {_flow_rules}
),
running AS MATERIALIZED (
    SELECT x.id, x.kind, x.args, x.metadata
    FROM {schema}.river_job AS x
    WHERE (SELECT ok FROM fresh) AND x.state = 'running' AND x.queue = @queue::text
    LIMIT 100000
),
used_rows AS MATERIALIZED (
    -- Running jobs per bucket: a bucket is a rule and a key, named by a token
    -- `<rule>:<key as JSON text>`.
    SELECT r.i, r.cap, r.i || ':' || ({_flow_key})::text AS token, count(*)::int AS n
    FROM running AS x
        JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
    WHERE r.cap IS NOT NULL AND NOT r.local AND NOT (x.id = ANY(@done::bigint[]))
    GROUP BY 1, 2, 3
),
used AS MATERIALIZED (
    -- The same as one object {token: running}, looked up per candidate.
    SELECT coalesce(jsonb_object_agg(u.token, u.n), '{}') AS map FROM used_rows AS u
),
rate_blocked AS MATERIALIZED (
    SELECT r.i, r.i || ':' || s.key AS token, s.tat - make_interval(secs => r.rate_tau) AS refill_at
    FROM rules AS r
        JOIN {schema}.pyriver_flow_state AS s ON s.name = r.name
    WHERE r.rate_t IS NOT NULL
        AND s.tat > (SELECT now FROM fresh) + make_interval(secs => r.rate_tau)
),
blocked AS MATERIALIZED (
    -- Buckets with no room: {token: true} for rules with a key (their jobs are skipped
    -- one by one), and the kinds whose rule without a key has no room (all skipped).
    -- The queue's rules without a key are `queue_room`.
    SELECT coalesce(jsonb_object_agg(b.token, true) FILTER (WHERE b.keyed), '{}') AS map,
        coalesce(array_agg(DISTINCT b.kind) FILTER (WHERE NOT b.keyed AND b.kind IS NOT NULL),
            '{}') AS kinds
    FROM (
        SELECT u.token, r.src <> 'none' AS keyed, r.kind
        FROM used_rows AS u JOIN rules AS r ON r.i = u.i
        WHERE u.n >= u.cap
        UNION ALL
        SELECT r.i || ':null', false, r.kind FROM rules AS r WHERE r.local AND r.cap <= 0
        UNION ALL
        SELECT rb.token, r.src <> 'none', r.kind
        FROM rate_blocked AS rb JOIN rules AS r ON r.i = rb.i
    ) AS b
),
queue_room AS MATERIALIZED (
    -- The room of the queue's rules without a key (NULL: none).
    SELECT min(least(
        CASE WHEN r.cap IS NULL THEN NULL
            ELSE r.cap - coalesce(((SELECT map FROM used) ->> (r.i || ':null'))::int, 0) END,
        CASE WHEN r.rate_t IS NULL THEN NULL
            ELSE floor((extract(epoch FROM (SELECT now FROM fresh) - greatest(coalesce((
                SELECT s.tat FROM {schema}.pyriver_flow_state AS s
                WHERE s.name = r.name AND s.key = 'null'
            ), (SELECT now FROM fresh)), (SELECT now FROM fresh))) + r.rate_tau) / r.rate_t)::int + 1
        END
    )) AS room
    FROM rules AS r
    WHERE r.kind IS NULL AND r.src = 'none'
),
seq_running AS MATERIALIZED (
    SELECT coalesce(array_agg(x.metadata ->> 'pyriver:sequence'), '{}') AS keys
    FROM running AS x
    WHERE @sequences::bool AND x.metadata ? 'pyriver:sequence'
),
cand AS MATERIALIZED (
    SELECT * FROM (
    SELECT x.id, x.kind, x.priority, x.scheduled_at, x.args, x.metadata
    FROM {schema}.river_job AS x
    WHERE (SELECT ok FROM fresh)
        AND x.state = 'available'
        AND x.queue = @queue::text
        -- now(), not the gate's time: the planner estimates with its value, and
        -- keeps the ordered index scan (a generic plan reused for every claim).
        AND x.scheduled_at <= now()
        AND coalesce((SELECT room FROM queue_room), 1) > 0
        -- The filters below are one expression, so that the generic plan does not
        -- multiply their guessed selectivities into "few rows" (and pick a bitmap
        -- scan and a sort of every available job).
        AND (CASE
            WHEN NOT (@kinds::text[] IS NULL OR x.kind = ANY(@kinds::text[])) THEN false
            WHEN x.kind = ANY((SELECT kinds FROM blocked)::text[]) THEN false
            WHEN (SELECT map FROM blocked) = '{}'::jsonb THEN true
            ELSE NOT EXISTS (
                SELECT 1
                FROM rules AS r
                WHERE r.src <> 'none' AND (r.kind IS NULL OR r.kind = x.kind)
                    AND (r.cap IS NOT NULL OR r.rate_t IS NOT NULL)
                    AND (SELECT map FROM blocked) ? (r.i || ':' || ({_flow_key})::text)
            )
        END
        -- A job in a sequence: only its sequence's head, and only by a client that
        -- knows the kind has sequences (@sequences); see sequence checks in job_claim.
        AND CASE WHEN NOT x.metadata ? 'pyriver:sequence' THEN true
            WHEN NOT @sequences::bool THEN false
            ELSE NOT (x.metadata ->> 'pyriver:sequence') = ANY((SELECT keys FROM seq_running)::text[])
                AND NOT EXISTS (
                    SELECT 1
                    FROM {schema}.river_job AS o
                    WHERE o.metadata ? 'pyriver:sequence' AND o.state <> 'completed'
                        AND (o.metadata ->> 'pyriver:sequence') = (x.metadata ->> 'pyriver:sequence')
                        AND o.id < x.id
                        AND o.queue = x.queue
                        AND o.state <> 'cancelled'
                        AND (o.state <> 'discarded' OR NOT o.metadata ? 'pyriver:sequence_continue')
                )
        END
        -- Under a key function: only the jobs whose key the client computed (or
        -- whose function failed: @forced, claimed to be failed at once).
        AND CASE WHEN @fk::jsonb IS NULL THEN true
            ELSE @fk::jsonb ? x.id::text OR x.id = ANY(@forced::bigint[])
                OR NOT EXISTS (
                    SELECT 1 FROM rules AS r
                    WHERE r.src = 'fn' AND (r.kind IS NULL OR r.kind = x.kind)
                )
        END)
        AND NOT EXISTS (
            SELECT 1 FROM {schema}.river_queue
            WHERE name = @queue::text AND paused_at IS NOT NULL
        )
    ORDER BY x.priority, x.scheduled_at, x.id
    LIMIT 2000
    ) AS c
    LIMIT @window::int
),
exp AS MATERIALIZED (
    -- Each candidate under each rule that covers it (but the queue's rules without a
    -- key, applied last), with its bucket; a candidate no such rule covers, once.
    SELECT x.id, x.priority, x.scheduled_at, r.i, r.name, r.cap, r.local, r.rate_t,
        r.rate_tau, ({_flow_key}) AS key, r.i || ':' || ({_flow_key})::text AS token
    FROM cand AS x
        LEFT JOIN rules AS r
            ON (r.kind IS NULL OR r.kind = x.kind) AND NOT (r.kind IS NULL AND r.src = 'none')
),
ranked AS MATERIALIZED (
    -- Each candidate's place in its bucket (in priority order), and the bucket's room:
    -- the least of its running cap's room and its rate bucket's tokens (NULL: no
    -- limit).
    SELECT e.id, e.priority, e.scheduled_at, e.i, e.key,
        row_number() OVER (PARTITION BY e.token ORDER BY e.priority, e.scheduled_at, e.id)
            AS rank,
        least(
            CASE WHEN e.cap IS NULL THEN NULL WHEN e.local THEN e.cap
                ELSE e.cap - coalesce(((SELECT map FROM used) ->> e.token)::int, 0) END,
            CASE WHEN e.rate_t IS NULL THEN NULL
                ELSE floor((extract(epoch FROM (SELECT now FROM fresh) - greatest(coalesce((
                    SELECT s.tat FROM {schema}.pyriver_flow_state AS s
                    WHERE s.name = e.name AND s.key = e.key::text
                ), (SELECT now FROM fresh)), (SELECT now FROM fresh))) + e.rate_tau) / e.rate_t)::int + 1
            END
        ) AS room
    FROM exp AS e
),
s1 AS MATERIALIZED (
    -- Candidates within the room of every bucket, with their turn (0 without
    -- fairness). Fairness (@fair_rule): a key's turns are kept in pyriver_flow_state
    -- (name @fair_name) as a virtual finish time, as in weighted fair queueing: each
    -- start moves it on by 1/weight seconds, a key back from idle starts at now, and
    -- the k-th candidate of a key waits k turns. Keys whose time is earliest go first,
    -- so keys with backlogs take turns, across claims and processes.
    SELECT k.id, k.priority, k.scheduled_at,
        coalesce(max(CASE WHEN k.i = @fair_rule::int THEN
            extract(epoch FROM greatest(coalesce((
                SELECT s.tat FROM {schema}.pyriver_flow_state AS s
                WHERE s.name = @fair_name::text AND s.key = k.key::text
            ), (SELECT now FROM fresh)), (SELECT now FROM fresh)))
            + k.rank::float8 / coalesce((
                SELECT w.weight FROM unnest(@w_key::jsonb[], @w_weight::int[]) AS w(key, weight)
                WHERE w.key = k.key
            ), @w_default::int)
        END), 0) AS turn
    FROM ranked AS k
    WHERE NOT @simple::bool
    GROUP BY k.id, k.priority, k.scheduled_at
    HAVING NOT coalesce(bool_or(k.room IS NOT NULL AND k.rank > k.room), false)
    UNION ALL
    -- Only the queue's rules without a key (@simple): every candidate may go.
    SELECT x.id, x.priority, x.scheduled_at, 0 FROM cand AS x WHERE @simple::bool
),
picked AS (
    -- In turn order, up to the queue's room and the free slots of this client.
    SELECT s.id
    FROM s1 AS s
    ORDER BY s.priority, s.turn, s.scheduled_at, s.id
    LIMIT greatest(0, least(@limit::int, (SELECT room FROM queue_room)))
),
claimed AS (
    UPDATE {schema}.river_job AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        attempted_at = (SELECT now FROM fresh),
        attempted_by = {_attempted_by_appended},
        metadata = CASE WHEN @fk::jsonb ? j.id::text
            THEN j.metadata || jsonb_build_object('pyriver:flow_key', @fk::jsonb -> j.id::text)
            ELSE j.metadata END
    WHERE j.id = ANY(ARRAY(
        SELECT l.id
        FROM {schema}.river_job AS l
        WHERE l.id = ANY(ARRAY(SELECT id FROM picked)) AND l.state = 'available'
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING {job_columns_j}
),
charged AS (
    -- GCRA: each start moves its bucket's theoretical arrival time on by one interval.
    INSERT INTO {schema}.pyriver_flow_state AS s (name, key, tat)
    SELECT r.name, ({_flow_key})::text,
        (SELECT now FROM fresh) + make_interval(secs => r.rate_t * count(*))
    FROM claimed AS x JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
    WHERE r.rate_t IS NOT NULL
    GROUP BY r.name, r.i, 2, r.rate_t
    ON CONFLICT (name, key) DO UPDATE
    SET tat = greatest(s.tat, (SELECT now FROM fresh)) + (EXCLUDED.tat - (SELECT now FROM fresh))
    RETURNING s.name, s.tat
),
turned AS (
    -- Fairness: each key served moves its turns on by starts / weight.
    INSERT INTO {schema}.pyriver_flow_state AS s (name, key, tat)
    SELECT @fair_name::text, ({_flow_key})::text,
        (SELECT now FROM fresh) + make_interval(secs => count(*)::float8 / min(coalesce((
            SELECT w.weight FROM unnest(@w_key::jsonb[], @w_weight::int[]) AS w(key, weight)
            WHERE w.key = ({_flow_key})
        ), @w_default::int)))
    FROM claimed AS x JOIN rules AS r ON r.i = @fair_rule::int
    WHERE r.kind IS NULL OR r.kind = x.kind
    GROUP BY 2
    ON CONFLICT (name, key) DO UPDATE
    SET tat = greatest(s.tat, (SELECT now FROM fresh)) + (EXCLUDED.tat - (SELECT now FROM fresh))
)
SELECT claimed.*, NULL::bool AS _stale, NULL::int AS _candidates, NULL::bool AS _blocked,
    NULL::timestamptz AS _refill_at, NULL::bool AS _more
FROM claimed
UNION ALL
SELECT {job_columns_null}, NOT (SELECT ok FROM fresh), (SELECT count(*)::int FROM cand),
    -- Jobs may wait on a limit: a bucket or a kind without room, or the queue's room
    -- used up by this claim (or before it).
    (SELECT map FROM blocked) <> '{}'::jsonb
        OR cardinality((SELECT kinds FROM blocked)) > 0
        OR coalesce((SELECT room FROM queue_room) <= (SELECT count(*) FROM claimed), false),
    -- When a bucket this claim found empty, or emptied, has a token again.
    least(
        (SELECT min(refill_at) FROM rate_blocked),
        (SELECT min(c.tat - make_interval(secs => r.rate_tau))
            FROM charged AS c JOIN rules AS r ON r.name = c.name
            WHERE c.tat - make_interval(secs => r.rate_tau) > (SELECT now FROM fresh))
    ),
    -- The scan ran out before the free slots did, with room left: jobs may wait
    -- behind the keys this claim filled (the next scan skips those).
    (SELECT count(*) FROM cand) >= @window::int
        AND (SELECT count(*) FROM claimed)
            < least(@limit::int, coalesce((SELECT room FROM queue_room), @limit::int));

-- name: flow_claim_capped
-- flow_claim for the most common limit, a queue's global_limit alone (no key, no
-- kind, no rate, no sequence): the plain claim's statement, behind the same gate,
-- taking no more than the cap leaves. Same last row as flow_claim.
WITH {_flow_gate_passed},
room AS MATERIALIZED (
    SELECT @cap::int - count(*)::int AS n
    FROM {schema}.river_job
    WHERE (SELECT ok FROM fresh) AND state = 'running' AND queue = @queue::text
        AND NOT (id = ANY(@done::bigint[]))
),
claimed AS (
    UPDATE {schema}.river_job AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        attempted_at = (SELECT now FROM fresh),
        attempted_by = {_attempted_by_appended}
    WHERE j.id = ANY(ARRAY(
        SELECT id
        FROM {schema}.river_job
        WHERE (SELECT ok FROM fresh)
            AND state = 'available'
            AND queue = @queue::text
            AND scheduled_at <= now()
            AND (@kinds::text[] IS NULL OR kind = ANY(@kinds::text[]))
            AND NOT metadata ? 'pyriver:sequence'
            AND NOT EXISTS (
                SELECT 1 FROM {schema}.river_queue
                WHERE name = @queue::text AND paused_at IS NOT NULL
            )
        ORDER BY priority, scheduled_at, id
        LIMIT greatest(0, least(@limit::int, (SELECT n FROM room)))
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING {job_columns_j}
)
SELECT claimed.*, NULL::bool AS _stale, NULL::int AS _candidates, NULL::bool AS _blocked,
    NULL::timestamptz AS _refill_at, NULL::bool AS _more
FROM claimed
UNION ALL
SELECT {job_columns_null}, NOT (SELECT ok FROM fresh), (SELECT count(*)::int FROM claimed),
    -- The cap, not the free slots, bounded this claim: jobs may wait on it.
    (SELECT n FROM room) <= (SELECT count(*) FROM claimed) AND (SELECT n FROM room) < @limit::int,
    NULL, false;

-- name: _flow_part_key
-- (A fragment of flow_claim_partitioned.) The key of job `x`, as in _flow_key.
jsonb_build_array(
    CASE WHEN @with_kind::bool THEN x.kind END,
    (CASE WHEN @src::text = 'args' THEN x.args ELSE x.metadata END) -> @f1::text,
    (CASE WHEN @src::text = 'args' THEN x.args ELSE x.metadata END) -> @f2::text,
    (CASE WHEN @src::text = 'args' THEN x.args ELSE x.metadata END) -> @f3::text)::text

-- name: flow_claim_partitioned
-- flow_claim for a queue partitioned by one key (partition_limit, with or without
-- the queue's global_limit, @cap NULL: none), the other common case: the same gate,
-- then one pass over the candidates with the key computed once per job. Keys at
-- their cap are skipped in the scan; within the claim, a key takes no more than its
-- room. Same last row as flow_claim.
WITH {_flow_gate_passed},
used AS MATERIALIZED (
    SELECT coalesce(jsonb_object_agg(u.key, u.n), '{}') AS map,
        coalesce(jsonb_object_agg(u.key, true) FILTER (WHERE u.n >= @part_cap::int), '{}')
            AS full_keys,
        coalesce(sum(u.n), 0)::int AS total
    FROM (
        SELECT {_flow_part_key} AS key, count(*)::int AS n
        FROM {schema}.river_job AS x
        WHERE (SELECT ok FROM fresh) AND x.state = 'running' AND x.queue = @queue::text
            AND NOT (x.id = ANY(@done::bigint[]))
        GROUP BY 1
    ) AS u
),
cand AS MATERIALIZED (
    SELECT * FROM (
    SELECT x.id, x.priority, x.scheduled_at, {_flow_part_key} AS key
    FROM {schema}.river_job AS x
    WHERE (SELECT ok FROM fresh)
        AND x.state = 'available'
        AND x.queue = @queue::text
        AND x.scheduled_at <= now()
        AND coalesce(@cap::int - (SELECT total FROM used), 1) > 0
        AND (CASE
            WHEN NOT (@kinds::text[] IS NULL OR x.kind = ANY(@kinds::text[])) THEN false
            WHEN x.metadata ? 'pyriver:sequence' THEN false
            ELSE NOT (SELECT full_keys FROM used) ? {_flow_part_key}
        END)
        AND NOT EXISTS (
            SELECT 1 FROM {schema}.river_queue
            WHERE name = @queue::text AND paused_at IS NOT NULL
        )
    ORDER BY x.priority, x.scheduled_at, x.id
    LIMIT 2000
    ) AS c
    LIMIT @window::int
),
picked AS (
    SELECT k.id
    FROM (
        SELECT c.id, c.priority, c.scheduled_at, c.key,
            row_number() OVER (PARTITION BY c.key ORDER BY c.priority, c.scheduled_at, c.id)
                AS rank
        FROM cand AS c
    ) AS k
    WHERE k.rank <= @part_cap::int - coalesce(((SELECT map FROM used) ->> k.key)::int, 0)
    ORDER BY k.priority, k.scheduled_at, k.id
    LIMIT greatest(0, least(@limit::int, @cap::int - (SELECT total FROM used)))
),
claimed AS (
    UPDATE {schema}.river_job AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        attempted_at = (SELECT now FROM fresh),
        attempted_by = {_attempted_by_appended}
    WHERE j.id = ANY(ARRAY(
        SELECT l.id
        FROM {schema}.river_job AS l
        WHERE l.id = ANY(ARRAY(SELECT id FROM picked)) AND l.state = 'available'
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING {job_columns_j}
)
SELECT claimed.*, NULL::bool AS _stale, NULL::int AS _candidates, NULL::bool AS _blocked,
    NULL::timestamptz AS _refill_at, NULL::bool AS _more
FROM claimed
UNION ALL
SELECT {job_columns_null}, NOT (SELECT ok FROM fresh), (SELECT count(*)::int FROM cand),
    (SELECT full_keys FROM used) <> '{}'::jsonb
        OR coalesce(@cap::int - (SELECT total FROM used) <= (SELECT count(*) FROM claimed), false),
    NULL,
    -- The scan ran out before the free slots did, with room left (see flow_claim).
    (SELECT count(*) FROM cand) >= @window::int
        AND (SELECT count(*) FROM claimed)
            < least(@limit::int, coalesce(@cap::int - (SELECT total FROM used), @limit::int));

-- name: flow_candidates
-- The jobs a claim under a key function (a partition key computed in Python) may take
-- next, read just before flow_claim: the client computes their keys and passes them
-- to flow_claim (which takes only jobs whose key it was given). @kinds: the kinds
-- such a rule covers.
SELECT {job_columns}
FROM {schema}.river_job
WHERE state = 'available'
    AND queue = @queue::text
    AND scheduled_at <= now()
    AND kind = ANY(@kinds::text[])
    AND NOT metadata ? 'pyriver:sequence'
ORDER BY priority, scheduled_at, id
LIMIT @window::int;

-- name: flow_usage
-- The status API (`client.flow_status()`): per rule and key, the jobs running and the
-- jobs waiting (available and due, among the first @scan in claim order), and the
-- state of rate buckets. Read-only, no lock: a moment's picture.
WITH rules AS MATERIALIZED (
    {_flow_rules}
),
running AS MATERIALIZED (
    SELECT x.id, x.kind, x.args, x.metadata
    FROM {schema}.river_job AS x
    WHERE x.state = 'running' AND x.queue = @queue::text
),
waiting AS MATERIALIZED (
    SELECT x.id, x.kind, x.args, x.metadata
    FROM {schema}.river_job AS x
    WHERE x.state = 'available'
        AND x.queue = @queue::text
        AND x.scheduled_at <= now()
        AND (@kinds::text[] IS NULL OR x.kind = ANY(@kinds::text[]))
    ORDER BY x.priority, x.scheduled_at, x.id
    LIMIT @scan::int
),
run_keys AS (
    SELECT r.i, {_flow_key} AS key, count(*)::int AS n
    FROM running AS x JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
    GROUP BY 1, 2
),
wait_keys AS (
    SELECT r.i, {_flow_key} AS key, count(*)::int AS n
    FROM waiting AS x JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
    GROUP BY 1, 2
),
usage AS (
    SELECT coalesce(a.i, b.i) AS i, coalesce(a.key, b.key) AS key,
        coalesce(a.n, 0) AS running, coalesce(b.n, 0) AS waiting
    FROM run_keys AS a FULL JOIN wait_keys AS b ON a.i = b.i AND a.key = b.key
)
SELECT u.i::int AS rule, u.key::text AS key, u.running, u.waiting,
    s.tat - make_interval(secs => r.rate_tau) AS next_start_at,
    (SELECT count(*)::int FROM waiting) AS scanned
FROM usage AS u
    JOIN rules AS r ON r.i = u.i
    LEFT JOIN {schema}.pyriver_flow_state AS s
        ON r.rate_t IS NOT NULL AND s.name = r.name AND s.key = u.key::text
ORDER BY u.i, u.running DESC, u.waiting DESC;

-- name: flow_unclaimed_kinds
-- Kind-aware claiming's safety net: kinds of jobs that have waited in @queue for more
-- than @older_than seconds although no client claiming @kinds will take them (no
-- worker here is registered for them). Bounded: it reads at most 1,000 rows, past the
-- due jobs of the kinds it claims.
SELECT kind, count(*)::int AS n, min(scheduled_at) AS since
FROM (
    SELECT kind, scheduled_at
    FROM {schema}.river_job
    WHERE state = 'available'
        AND queue = @queue::text
        AND scheduled_at <= now() - make_interval(secs => @older_than::float8)
        AND NOT kind = ANY(@kinds::text[])
    ORDER BY priority, scheduled_at, id
    LIMIT 1000
) AS w
GROUP BY kind
ORDER BY kind;

-- name: flow_prune
-- Rows of pyriver_flow_state whose time has passed mean the same as no row (a full
-- rate bucket, a key whose turn is now): the clients using @names delete them now and
-- then, so per-key rules do not leave a row behind for every key ever seen.
DELETE FROM {schema}.pyriver_flow_state
WHERE name = ANY(@names::text[]) AND tat < now();

-- name: _flow_gate_passed
-- The gate of every flow claim: the limits' claims of one queue take turns through
-- its row. `fresh.ok` is false when another claim committed while this one waited
-- (its snapshot is stale: the caller runs it again holding the gate); `fresh.now` is
-- the moment the gate was passed.
gate AS MATERIALIZED (
    INSERT INTO {schema}.pyriver_flow_state AS s (name, key, tat, n)
    VALUES (@gate::text, '', now(), 1)
    ON CONFLICT (name, key) DO UPDATE SET n = s.n + 1
    RETURNING s.n, clock_timestamp() AS at
),
fresh AS MATERIALIZED (
    SELECT g.n - 1 = coalesce((
        SELECT f.n FROM {schema}.pyriver_flow_state AS f
        WHERE f.name = @gate::text AND f.key = ''
    ), 0) AS ok, g.at AS now
    FROM gate AS g
)
