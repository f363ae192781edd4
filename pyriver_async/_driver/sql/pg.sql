-- Queries on PostgreSQL itself: statistics, VACUUM, health.

-- name: pg_job_table_stats
-- Live and dead row versions of the job table (cumulative statistics, which lag by
-- up to a second), and whether this role may VACUUM it: the table's or the
-- database's owner, or a member of the owning role (superusers are members of every
-- role). PostgreSQL 17's MAINTAIN privilege is not looked at.
SELECT s.n_live_tup, s.n_dead_tup,
    pg_has_role(c.relowner, 'USAGE')
        OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()),
            'USAGE') AS can_vacuum
FROM pg_class AS c
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = '{schema}.river_job'::regclass;

-- name: pg_vacuum_jobs
-- SKIP_LOCKED: when autovacuum (or anyone) is already vacuuming the table, there is
-- nothing to wait for. ANALYZE keeps the planner's view of a fast-changing table fresh.
VACUUM (SKIP_LOCKED, ANALYZE) {schema}.river_job;
