-- pyriver 001: one row per running pyriver_async client, kept fresh by a heartbeat.
--
-- River decides that a `running` job is stuck only by its age (attempted_at older
-- than rescue_stuck_jobs_after), which for long jobs means waiting a long time
-- after their process has died. With a heartbeat per client, the rescuer can tell
-- that the client named in a job's attempted_by has stopped beating and rescue
-- its jobs soon after, while leaving slow jobs of live clients alone.
--
-- This table belongs to pyriver_async's own migration line; River ignores lines
-- other than 'main' and never reads it.

CREATE TABLE pyriver_client (
    id text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    queues text[] NOT NULL DEFAULT '{}',
    CONSTRAINT id_length CHECK (char_length(id) > 0 AND char_length(id) < 128)
);

-- Rescuer: finds clients whose last heartbeat is older than the liveness cutoff
-- (and prunes their rows), without scanning the live ones.
CREATE INDEX pyriver_client_heartbeat_at_idx ON pyriver_client (heartbeat_at);
