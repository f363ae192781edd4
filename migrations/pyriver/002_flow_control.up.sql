-- pyriver 002: the state of flow control (docs/flow-control.md).
--
-- Concurrency limits need no state of their own: a claim counts the `running` rows of
-- river_job under the queue's advisory lock. Two things do:
--
-- 1. Rate limits and fair turns: one row per bucket (a rule of a queue, and a key when
--    the rule has one) holding a time: a rate limit's GCRA theoretical arrival time,
--    so that the rate holds across processes and restarts; a fair rule's virtual
--    finish time of the key, so that keys take turns across claims. A row whose time
--    has passed means the same as no row, and is deleted by the clients using it.
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
    PRIMARY KEY (name, key),
    CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 512)
);

-- The claim: the buckets of a rule that are empty now (tat further ahead than the
-- burst tolerance), without reading the full ones.
CREATE INDEX pyriver_flow_state_tat_idx ON pyriver_flow_state (name, tat);

-- The claim's sequence check: the unfinished jobs of one sequence, by id (2. above).
CREATE INDEX pyriver_job_sequence_idx ON river_job ((metadata ->> 'pyriver:sequence'), id)
    WHERE metadata ? 'pyriver:sequence' AND state <> 'completed';
