-- Queries on PostgreSQL itself: statistics, VACUUM, health.

-- name: pg_job_table_stats
-- Live and dead row versions of the job table (cumulative statistics, which lag by
-- up to a second), and whether this role may VACUUM it: the table's or the
-- database's owner, or a member of the owning role (superusers are members of every
-- role). PostgreSQL 17's MAINTAIN privilege is not looked at. The table is found by
-- the schema's name as a bound value (format's %I quotes it as needed), so any schema
-- name works, one with a quote or a dash included.
SELECT s.n_live_tup, s.n_dead_tup,
    pg_has_role(c.relowner, 'USAGE')
        OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()),
            'USAGE') AS can_vacuum
FROM pg_class AS c
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = to_regclass(format('%I.%I', @schema::text, 'river_job'));

-- name: pg_vacuum_jobs
-- SKIP_LOCKED: when autovacuum (or anyone) is already vacuuming the table, there is
-- nothing to wait for. ANALYZE keeps the planner's view of a fast-changing table fresh.
VACUUM (SKIP_LOCKED, ANALYZE) {schema}.river_job;

-- Failover and the vacuum horizon (issue 22).

-- name: pg_writable
-- Whether this connection's server takes writes now: not a standby (in recovery),
-- and not in read-only mode (default_transaction_read_only, as some failover tools
-- set on the old primary). The client asks it while it waits out a failover.
SELECT NOT pg_is_in_recovery() AND NOT current_setting('transaction_read_only')::bool
    AS writable;

-- name: pg_horizon_holders
-- What keeps VACUUM from removing the dead row versions of this database's tables,
-- oldest first: sessions whose transaction (holding a snapshot, backend_xmin, or a
-- transaction id, backend_xid) started more than @older_than seconds ago; prepared
-- transactions as old; and replication slots not in use that still hold an xmin.
-- Sessions of other databases do not hold this one's horizon; walsenders' xmin (a
-- standby's hot_standby_feedback) has no age to judge by, and autovacuum workers do
-- not count. Other roles' sessions show only to a superuser or a member of
-- pg_read_all_stats (pg_monitor): the query then sees them without their xmin.
SELECT h.* FROM (
    SELECT 'session'::text AS kind, a.pid, a.application_name, a.usename::text AS role,
        a.client_addr::text AS client_addr, a.state,
        extract(epoch FROM now() - a.xact_start)::float8 AS age_s,
        age(coalesce(a.backend_xmin, a.backend_xid))::bigint AS xid_age,
        left(a.query, 200) AS query, NULL::text AS name
    FROM pg_stat_activity AS a
    WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
        AND a.datname = current_database()
        AND a.backend_type NOT IN ('walsender', 'autovacuum worker')
        AND a.pid <> pg_backend_pid()
        AND a.xact_start < now() - make_interval(secs => @older_than::float8)
    UNION ALL
    SELECT 'prepared_transaction', NULL, NULL, p.owner::text, NULL, NULL,
        extract(epoch FROM now() - p.prepared)::float8, age(p.transaction)::bigint,
        NULL, p.gid
    FROM pg_prepared_xacts AS p
    WHERE p.database = current_database()
        AND p.prepared < now() - make_interval(secs => @older_than::float8)
    UNION ALL
    SELECT 'replication_slot', NULL, NULL, NULL, NULL, 'inactive', NULL,
        age(s.xmin)::bigint, NULL, s.slot_name::text
    FROM pg_replication_slots AS s
    WHERE s.xmin IS NOT NULL AND NOT s.active
        AND (s.database IS NULL OR s.database = current_database())
) AS h
ORDER BY h.xid_age DESC NULLS LAST, h.age_s DESC NULLS LAST
LIMIT @limit::int;
