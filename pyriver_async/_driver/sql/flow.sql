-- Flow control: the claim of a queue with limits, and what the status API reads.
-- Placeholders as in job.sql. The limits of a queue travel as parallel arrays, one
-- element per rule (see pyriver_async/_flow.py, `ClaimPlan`): which kind it covers
-- (NULL: every kind of the queue), where its key comes from, its running cap, and its
-- rate. Nothing about a limit is stored, except the state of rate limits
-- (pyriver_flow_state, the pyriver migration line).

-- name: flow_lock
-- Serialises the claims of one queue that has limits, across every process, until the
-- transaction ends. The claim that follows runs as a statement of its own, so its
-- snapshot is taken after this lock is held: it sees every claim committed before.
-- It also turns off, for this transaction only, JIT compilation and custom plans: the
-- claim is one big prepared statement whose generic plan is good, replanning it costs
-- ~2 ms, and its estimated cost is high enough that JIT (~130 ms) would kick in.
SELECT pg_advisory_xact_lock(@key::bigint),
    set_config('jit', 'off', true),
    set_config('plan_cache_mode', 'force_generic_plan', true);

-- name: _flow_key
-- (A fragment.) The key of job `x` under rule `r`, as jsonb: null for a rule without
-- a key (the whole scope is one bucket), else an array of the kind (when the rule
-- partitions by kind) and up to three fields of the args or of the metadata. A key
-- computed by a function of the job (src 'fn') was computed by the client for the
-- candidates (@fk: {job id: {rule name: key}}) and is stamped into the metadata of the
-- jobs it claims (`pyriver:flow_key`), where later claims read it. SQL NULL: the job
-- is not limited by this rule (a job whose key function failed, to be failed).
(CASE
    WHEN r.src = 'none' THEN 'null'::jsonb
    WHEN r.src = 'fn' THEN coalesce(
        x.metadata -> 'pyriver:flow_key' -> r.name, @fk::jsonb -> x.id::text -> r.name)
    ELSE jsonb_build_array(
        CASE WHEN r.with_kind THEN x.kind END,
        (CASE WHEN r.src = 'args' THEN x.args ELSE x.metadata END) -> r.f1,
        (CASE WHEN r.src = 'args' THEN x.args ELSE x.metadata END) -> r.f2,
        (CASE WHEN r.src = 'args' THEN x.args ELSE x.metadata END) -> r.f3)
END)

-- name: _flow_rules
-- (A fragment.) The rules of this claim, numbered from 1.
SELECT * FROM unnest(
    @r_kind::text[], @r_src::text[], @r_with_kind::bool[], @r_f1::text[], @r_f2::text[],
    @r_f3::text[], @r_name::text[], @r_cap::int[], @r_local::bool[], @r_rate_t::float8[],
    @r_rate_tau::float8[]
) WITH ORDINALITY AS r(kind, src, with_kind, f1, f2, f3, name, cap, local, rate_t, rate_tau, i)

-- name: flow_claim
-- The claim of a queue with limits, run after flow_lock in the same transaction.
--
-- 1. `used`: the running jobs of the queue, per rule and key (the jobs this client has
--    finished but whose outcome is not written yet, @done, are not running any more).
-- 2. `blocked`: the buckets with no room left (running cap reached, or a rate limit's
--    bucket empty). The scan of available jobs skips their jobs, so jobs over a limit
--    stay `available`, are never claimed, and do not hide the jobs behind them.
-- 3. `cand`: up to @window available jobs, in priority order, not blocked; a job in a
--    sequence only when it is the sequence's head.
-- 4. the pick: per key, jobs in order while its bucket has room (rules with a key
--    first, then each kind's caps, then the queue's caps and @limit free slots here);
--    with fairness, keys take turns (fewest running first, `weight` per turn).
-- 5. the picked jobs are locked (SKIP LOCKED) and marked running, and each rate
--    bucket used is charged for the jobs it started (GCRA: the bucket's theoretical
--    arrival time moves on by one emission interval per start).
-- A last row with a NULL id tells the producer what it saw: how many candidates,
-- whether some bucket was blocked, and when the earliest empty rate bucket refills.
-- Times are the statement's (statement_timestamp()), not the transaction's: the
-- transaction began before the lock was held, maybe a while ago.
WITH rules AS MATERIALIZED (
    {_flow_rules}
),
running AS MATERIALIZED (
    SELECT x.id, x.kind, x.args, x.metadata
    FROM {schema}.river_job AS x
    WHERE x.state = 'running' AND x.queue = @queue::text
),
used AS MATERIALIZED (
    SELECT r.i, {_flow_key} AS key, count(*)::int AS n
    FROM running AS x
        JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
    WHERE r.cap IS NOT NULL AND NOT r.local AND NOT (x.id = ANY(@done::bigint[]))
    GROUP BY 1, 2
),
rate_blocked AS MATERIALIZED (
    SELECT r.i, s.key, s.tat - make_interval(secs => r.rate_tau) AS refill_at
    FROM rules AS r
        JOIN {schema}.pyriver_flow_state AS s ON s.name = r.name
    WHERE r.rate_t IS NOT NULL AND s.tat > statement_timestamp() + make_interval(secs => r.rate_tau)
),
blocked AS MATERIALIZED (
    SELECT coalesce(array_agg(b.token), '{}') AS tokens
    FROM (
        SELECT u.i || ':' || u.key::text AS token
        FROM used AS u JOIN rules AS r ON r.i = u.i
        WHERE u.n >= r.cap
        UNION ALL
        SELECT r.i || ':null' FROM rules AS r WHERE r.local AND r.cap <= 0
        UNION ALL
        SELECT rb.i || ':' || rb.key FROM rate_blocked AS rb
    ) AS b
),
seq_running AS MATERIALIZED (
    SELECT coalesce(array_agg(x.metadata ->> 'pyriver:sequence'), '{}') AS keys
    FROM running AS x
    WHERE @sequences::bool AND x.metadata ? 'pyriver:sequence'
),
cand AS MATERIALIZED (
    SELECT x.id, x.kind, x.priority, x.scheduled_at, x.args, x.metadata
    FROM {schema}.river_job AS x
    WHERE x.state = 'available'
        AND x.queue = @queue::text
        AND x.scheduled_at <= statement_timestamp()
        AND (@kinds::text[] IS NULL OR x.kind = ANY(@kinds::text[]))
        AND (CASE WHEN cardinality((SELECT tokens FROM blocked)) = 0 THEN true
            ELSE NOT (ARRAY(
                SELECT r.i || ':' || {_flow_key}::text
                FROM rules AS r
                WHERE (r.kind IS NULL OR r.kind = x.kind)
                    AND (r.cap IS NOT NULL OR r.rate_t IS NOT NULL)
            ) && (SELECT tokens FROM blocked))
        END)
        -- A job in a sequence: only its sequence's head, and only by a client that
        -- knows the kind has sequences (@sequences); see sequence checks in job_claim.
        AND (CASE WHEN NOT x.metadata ? 'pyriver:sequence' THEN true
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
        END)
        -- Under a key function: only the jobs whose key the client computed (or
        -- whose function failed: @forced, claimed to be failed at once).
        AND (@fk::jsonb IS NULL OR @fk::jsonb ? x.id::text OR x.id = ANY(@forced::bigint[])
            OR NOT EXISTS (
                SELECT 1 FROM rules AS r
                WHERE r.src = 'fn' AND (r.kind IS NULL OR r.kind = x.kind)
            ))
        AND NOT EXISTS (
            SELECT 1 FROM {schema}.river_queue
            WHERE name = @queue::text AND paused_at IS NOT NULL
        )
    ORDER BY x.priority, x.scheduled_at, x.id
    LIMIT @window::int
),
exp AS MATERIALIZED (
    -- Each candidate under each rule that covers it, with its key.
    SELECT x.id, x.priority, x.scheduled_at, r.i, r.kind IS NULL AS queue_wide,
        r.src <> 'none' AS keyed, r.name, r.cap, r.local, r.rate_t, r.rate_tau,
        {_flow_key} AS key
    FROM cand AS x
        JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
),
room AS MATERIALIZED (
    -- What each bucket met among the candidates can still start: the least of its
    -- running cap's room and its rate bucket's tokens (NULL: no limit).
    SELECT e.i, e.key, coalesce(u.n, 0) AS n,
        least(
            CASE WHEN e.cap IS NULL THEN NULL WHEN e.local THEN e.cap
                ELSE e.cap - coalesce(u.n, 0) END,
            CASE WHEN e.rate_t IS NULL THEN NULL
                ELSE floor((extract(epoch FROM statement_timestamp() - greatest(coalesce(s.tat, statement_timestamp()), statement_timestamp()))
                    + e.rate_tau) / e.rate_t)::int + 1 END
        ) AS room
    FROM (SELECT DISTINCT i, key, name, cap, local, rate_t, rate_tau FROM exp) AS e
        LEFT JOIN used AS u ON u.i = e.i AND u.key = e.key
        LEFT JOIN {schema}.pyriver_flow_state AS s
            ON e.rate_t IS NOT NULL AND s.name = e.name AND s.key = e.key::text
),
ranked AS MATERIALIZED (
    -- Rules with a key: each candidate's place in its bucket, in priority order.
    SELECT e.id, e.i, e.key,
        row_number() OVER (PARTITION BY e.i, e.key ORDER BY e.priority, e.scheduled_at, e.id)
            AS rank
    FROM exp AS e
    WHERE e.keyed
),
turns AS MATERIALIZED (
    -- Fairness (@fair_rule): each key of that rule met among the candidates, with when
    -- its next turn is due and its weight. A key's turns are kept in pyriver_flow_state
    -- (name @fair_name) as a virtual finish time, as in weighted fair queueing: each
    -- start moves it on by 1/weight seconds, a key back from idle starts at now. Keys
    -- whose time is earliest go first, so keys with backlogs take turns, across claims
    -- and processes, `weight` starts per turn.
    SELECT e.key, extract(epoch FROM greatest(coalesce(s.tat, statement_timestamp()), statement_timestamp())) AS base,
        coalesce(w.weight, @w_default::int) AS weight
    FROM (SELECT DISTINCT key FROM exp WHERE i = @fair_rule::int) AS e
        LEFT JOIN {schema}.pyriver_flow_state AS s
            ON s.name = @fair_name::text AND s.key = e.key::text
        LEFT JOIN unnest(@w_key::jsonb[], @w_weight::int[]) AS w(key, weight) ON w.key = e.key
),
s1 AS MATERIALIZED (
    -- Candidates within the room of every bucket with a key, with their turn (0
    -- without fairness): the k-th job of a key waits k turns of its key.
    SELECT x.id, x.priority, x.scheduled_at,
        coalesce((
            SELECT t.base + k.rank::float8 / t.weight
            FROM ranked AS k JOIN turns AS t ON t.key = k.key
            WHERE k.id = x.id AND k.i = @fair_rule::int
        ), 0) AS turn
    FROM cand AS x
    WHERE NOT EXISTS (
        SELECT 1
        FROM ranked AS k JOIN room AS rm ON rm.i = k.i AND rm.key = k.key
        WHERE k.id = x.id AND rm.room IS NOT NULL AND k.rank > rm.room
    )
),
s2 AS MATERIALIZED (
    -- Then each kind's caps without a key, taking jobs in turn order.
    SELECT s.id, s.priority, s.scheduled_at, s.turn
    FROM s1 AS s
    WHERE NOT EXISTS (
        SELECT 1
        FROM (
            SELECT e.id, e.i,
                row_number() OVER (PARTITION BY e.i
                    ORDER BY t.priority, t.turn, t.scheduled_at, t.id) AS rank
            FROM exp AS e JOIN s1 AS t ON t.id = e.id
            WHERE NOT e.keyed AND NOT e.queue_wide
        ) AS k
            JOIN room AS rm ON rm.i = k.i AND rm.key = 'null'::jsonb
        WHERE k.id = s.id AND rm.room IS NOT NULL AND k.rank > rm.room
    )
),
picked AS (
    -- Then the queue's caps without a key, and the free slots of this client.
    SELECT s.id
    FROM s2 AS s
    ORDER BY s.priority, s.turn, s.scheduled_at, s.id
    LIMIT greatest(0, least(@limit::int, (
        SELECT min(rm.room)
        FROM room AS rm JOIN rules AS r ON r.i = rm.i
        WHERE r.kind IS NULL AND r.src = 'none'
    )))
),
claimed AS (
    UPDATE {schema}.river_job AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        attempted_at = statement_timestamp(),
        attempted_by = CASE
            WHEN coalesce(array_length(j.attempted_by, 1), 0) >= 100
                THEN array_append(j.attempted_by[2:], @client_id::text)
            ELSE array_append(j.attempted_by, @client_id::text)
        END,
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
    SELECT r.name, ({_flow_key})::text, statement_timestamp() + make_interval(secs => r.rate_t * count(*))
    FROM claimed AS x JOIN rules AS r ON (r.kind IS NULL OR r.kind = x.kind)
    WHERE r.rate_t IS NOT NULL
    GROUP BY r.name, r.i, 2, r.rate_t
    ON CONFLICT (name, key) DO UPDATE
    SET tat = greatest(s.tat, statement_timestamp()) + (EXCLUDED.tat - statement_timestamp())
    RETURNING s.name, s.tat
),
turned AS (
    -- Fairness: each key served moves its turns on by starts / weight.
    INSERT INTO {schema}.pyriver_flow_state AS s (name, key, tat)
    SELECT @fair_name::text, t.key::text,
        statement_timestamp() + make_interval(secs => count(*)::float8 / min(t.weight))
    FROM claimed AS c
        JOIN exp AS e ON e.id = c.id AND e.i = @fair_rule::int
        JOIN turns AS t ON t.key = e.key
    GROUP BY t.key
    ON CONFLICT (name, key) DO UPDATE
    SET tat = greatest(s.tat, statement_timestamp()) + (EXCLUDED.tat - statement_timestamp())
)
SELECT claimed.*, NULL::int AS _candidates, NULL::bool AS _blocked, NULL::timestamptz AS _refill_at
FROM claimed
UNION ALL
SELECT {job_columns_null}, (SELECT count(*)::int FROM cand),
    cardinality((SELECT tokens FROM blocked)) > 0,
    -- When a bucket this claim found empty, or emptied, has a token again.
    least(
        (SELECT min(refill_at) FROM rate_blocked),
        (SELECT min(c.tat - make_interval(secs => r.rate_tau))
            FROM charged AS c JOIN rules AS r ON r.name = c.name
            WHERE c.tat - make_interval(secs => r.rate_tau) > statement_timestamp())
    );

-- name: flow_candidates
-- The jobs a claim under a key function (a partition key computed in Python) may take
-- next, read under the queue's lock just before flow_claim: the client computes
-- their keys and passes them to flow_claim. @kinds: the kinds such a rule covers.
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
