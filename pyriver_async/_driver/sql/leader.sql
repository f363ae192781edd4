-- Leader election on river_leader (River's table and protocol; see
-- pyriver_async/_maintenance/leader.py). Durations travel as float seconds.

-- name: leader_delete_expired
-- A leader that died leaves its row behind; once expired, it is fair game.
DELETE FROM {schema}.river_leader WHERE expires_at < now();

-- name: leader_elect
-- Become leader if nobody is. Concurrent electors serialise on the primary key:
-- exactly one insert wins, the others do nothing and get no row back.
INSERT INTO {schema}.river_leader (name, leader_id, elected_at, expires_at)
VALUES ('default', @leader_id::text, now(), now() + make_interval(secs => @ttl::float8))
ON CONFLICT (name) DO NOTHING
RETURNING elected_at;

-- name: leader_get
-- Who leads, and for how many more seconds unless renewed.
SELECT leader_id, elected_at, extract(epoch FROM expires_at - now())::float8 AS remaining
FROM {schema}.river_leader;

-- name: leader_reelect
-- Renew only my own term, and only while it still holds: once expired, the row may
-- already belong (or soon belong) to someone else.
UPDATE {schema}.river_leader
SET expires_at = now() + make_interval(secs => @ttl::float8)
WHERE leader_id = @leader_id::text AND elected_at = @elected_at::timestamptz
    AND expires_at >= now()
RETURNING expires_at;

-- name: leader_resign
-- Give up my term and tell the others, so one of them takes over at once.
WITH resigned AS (
    DELETE FROM {schema}.river_leader
    WHERE leader_id = @leader_id::text AND elected_at = @elected_at::timestamptz
    RETURNING leader_id
)
SELECT count(pg_notify({leadership_channel},
    json_build_object('action', 'resigned', 'leader_id', r.leader_id)::text)) AS n
FROM resigned AS r;
