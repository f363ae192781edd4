-- pyriver 002: what a client's liveness row tells an operator (`client.list_clients()`,
-- `pyriver clients`, the web UI), beside the heartbeat the rescuer reads.
--
-- - version: the pyriver_async release the client runs;
-- - queue_use: {"<queue>": {"max_workers": n, "running": n}} as of the last beat;
-- - stopping: the client is shutting down (draining its running jobs);
-- - dead_after: its dead_client_after, in seconds, so a reader can tell a live
--   client from one that stopped beating without knowing its settings;
-- - metadata: the client's retention settings and, on the leader, its periodic
--   schedule (id, schedule, tz, next_run_at, last_run_at, run_on_start);
-- - stopped_at: when a client that stopped marked its row dead (heartbeat_at is then
--   '-infinity', for the rescuer).
--
-- Every column has a default, so rows written by an older client stay valid.

ALTER TABLE pyriver_client
    ADD COLUMN version text NOT NULL DEFAULT '',
    ADD COLUMN queue_use jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN stopping boolean NOT NULL DEFAULT false,
    ADD COLUMN dead_after double precision,
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN stopped_at timestamptz;
