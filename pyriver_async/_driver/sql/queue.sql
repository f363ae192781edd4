-- Queries on river_queue (placeholders as in job.sql).

-- name: queue_pause
-- Pause one queue (@name) or every queue ('*'): persisted, then announced.
WITH upserted AS (
    INSERT INTO {schema}.river_queue (name, paused_at, updated_at)
    SELECT @name::text, now(), now() WHERE @name::text <> '*'
    ON CONFLICT (name) DO UPDATE
        SET paused_at = coalesce({schema}.river_queue.paused_at, now()), updated_at = now()
    RETURNING name
),
every AS (
    UPDATE {schema}.river_queue SET paused_at = coalesce(paused_at, now()), updated_at = now()
    WHERE @name::text = '*'
    RETURNING name
)
SELECT pg_notify({control_channel},
    json_build_object('action', 'pause', 'queue', @name::text)::text),
    (SELECT count(*) FROM upserted) + (SELECT count(*) FROM every);

-- name: queue_resume
WITH upserted AS (
    INSERT INTO {schema}.river_queue (name, paused_at, updated_at)
    SELECT @name::text, NULL, now() WHERE @name::text <> '*'
    ON CONFLICT (name) DO UPDATE SET paused_at = NULL, updated_at = now()
    RETURNING name
),
every AS (
    UPDATE {schema}.river_queue SET paused_at = NULL, updated_at = now()
    WHERE @name::text = '*'
    RETURNING name
)
SELECT pg_notify({control_channel},
    json_build_object('action', 'resume', 'queue', @name::text)::text),
    (SELECT count(*) FROM upserted) + (SELECT count(*) FROM every);

-- name: queue_paused_many
SELECT name FROM {schema}.river_queue WHERE name = ANY(@names::text[]) AND paused_at IS NOT NULL;

-- name: queue_keep
-- One river_queue row per queue a client works, its updated_at kept fresh (the
-- cleaner removes rows nobody has touched for a day). paused_at is left alone.
-- Sorted, so that clients touching the same rows lock them in the same order.
INSERT INTO {schema}.river_queue (name, created_at, updated_at)
SELECT q.name, now(), now()
FROM (SELECT DISTINCT unnest(@names::text[]) AS name) AS q
ORDER BY q.name
ON CONFLICT (name) DO UPDATE SET updated_at = now();

-- name: queue_clean
-- river_queue rows no client has touched for @older_than seconds, up to @limit at a time.
DELETE FROM {schema}.river_queue
WHERE name = ANY(ARRAY(
        SELECT name
        FROM {schema}.river_queue
        WHERE updated_at < now() - make_interval(secs => @older_than::float8)
        ORDER BY name
        LIMIT @limit::int
        FOR UPDATE SKIP LOCKED
    ))
    AND updated_at < now() - make_interval(secs => @older_than::float8);
