-- Client liveness rows (pyriver_client, our own `pyriver` migration line).

-- name: client_heartbeat
-- Every running client keeps its row fresh; the rescuer reads heartbeat_at. A row a
-- stopped client marked dead ('-infinity') starts a new life when the id comes back.
-- The rest (pyriver 002) is what `list_clients()` and the web UI show: the version,
-- each queue's max_workers and running count, whether it is stopping, its
-- dead_client_after (to judge it alive), and metadata (retention; on the leader, its
-- periodic schedule).
INSERT INTO {schema}.pyriver_client AS c (
    id, hostname, pid, started_at, heartbeat_at, queues, version, queue_use, stopping,
    dead_after, metadata, stopped_at
)
VALUES (
    @id::text, @hostname::text, @pid::int, now(), now(), @queues::text[], @version::text,
    @queue_use::text::jsonb, @stopping::bool, @dead_after::float8, @metadata::text::jsonb, NULL
)
ON CONFLICT (id) DO UPDATE
SET hostname = EXCLUDED.hostname,
    pid = EXCLUDED.pid,
    started_at = CASE WHEN c.heartbeat_at = '-infinity' THEN now() ELSE c.started_at END,
    heartbeat_at = now(),
    queues = EXCLUDED.queues,
    version = EXCLUDED.version,
    queue_use = EXCLUDED.queue_use,
    stopping = EXCLUDED.stopping,
    dead_after = EXCLUDED.dead_after,
    metadata = EXCLUDED.metadata,
    stopped_at = NULL;

-- name: client_mark_dead
-- A stopping client: whatever it still holds in `running` is abandoned, so the
-- rescuer may take it back on its next pass rather than after dead_client_after.
UPDATE {schema}.pyriver_client
SET heartbeat_at = '-infinity', stopped_at = now(), stopping = true
WHERE id = @id::text;

-- name: client_prune
-- Liveness rows of clients gone for longer than @older_than seconds, once none of
-- their jobs is left in `running` (the rescuer needs the row to judge those).
DELETE FROM {schema}.pyriver_client AS c
WHERE c.heartbeat_at < now() - make_interval(secs => @older_than::float8)
    AND NOT EXISTS (
        SELECT 1
        FROM {schema}.river_job AS j
        WHERE j.state = 'running'
            AND j.attempted_by[cardinality(j.attempted_by)] = c.id
    );
