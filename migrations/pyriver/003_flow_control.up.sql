-- pyriver 003: the state of flow control (docs/flow-control.md).
--
-- Concurrency limits need no state of their own: a claim counts the `running` rows of
-- river_job, one claim of a queue at a time. What is stored:
--
-- 1. pyriver_flow_state, one row per
--    - queue with limits: its claim gate. A claim locks the row (so the claims of the
--      queue run one at a time, across processes) and bumps its counter `n` (so a
--      claim can tell whether another one committed since its snapshot).
--    - rate limit bucket (a rule of a queue, and a key when the rule has one): GCRA's
--      theoretical arrival time in `tat`, so that the rate holds across processes and
--      restarts;
--    - key of a fair rule: its virtual finish time in `tat`, so that keys take turns
--      across claims.
--    A bucket or turn row whose time has passed means the same as no row, and is
--    deleted by the clients using it.
-- 2. Sequences: a job in a sequence carries its key in metadata (`pyriver:sequence`,
--    written at insert). The claim takes it only when no earlier job of its sequence
--    is unfinished; this partial index finds those in a few index pages. It holds
--    only jobs in sequences that have not completed, so it stays small and costs
--    nothing to jobs outside sequences.
--
-- River ignores this line and these objects: a River process sharing the database
-- neither reads nor writes them (the index is on River's table, and River's inserts
-- never match its predicate).

CREATE TABLE pyriver_flow_state (
    name text NOT NULL,
    key text NOT NULL,
    tat timestamptz NOT NULL,
    n bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, key),
    CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 512)
);

-- The claim: the buckets of a rule that are empty now (tat further ahead than the
-- burst tolerance), without reading the full ones.
CREATE INDEX pyriver_flow_state_tat_idx ON pyriver_flow_state (name, tat);

-- The claim's sequence check: the unfinished jobs of one sequence, by id (2. above).
CREATE INDEX pyriver_job_sequence_idx ON river_job ((metadata ->> 'pyriver:sequence'), id)
    WHERE metadata ? 'pyriver:sequence' AND state <> 'completed';
