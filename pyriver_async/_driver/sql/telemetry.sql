-- Telemetry (issue 19): what the observable gauges report.

-- name: job_count_by_queue_state
-- Unfinished jobs per queue and state, for the queue depth gauge (the leader runs it
-- every queue_depth_interval). Finalized states are left out: they are history, and
-- counting them would scan every retained row.
SELECT queue, state::text AS state, count(*)::bigint AS n
FROM {schema}.river_job
WHERE state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
GROUP BY queue, state;
