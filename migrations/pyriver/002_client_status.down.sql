-- pyriver 002 (down): liveness rows carry the heartbeat alone again.

ALTER TABLE pyriver_client
    DROP COLUMN version,
    DROP COLUMN queue_use,
    DROP COLUMN stopping,
    DROP COLUMN dead_after,
    DROP COLUMN metadata,
    DROP COLUMN stopped_at;
