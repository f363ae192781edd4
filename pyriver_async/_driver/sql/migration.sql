-- Queries of the migrator (pyriver_async/_migrate) and of the schema check a client
-- runs at start. Migration files themselves run as scripts, not from here.

-- name: migration_table_info
-- Whether river_migration exists in @schema, and whether it has its `line` column
-- (added by main 005; before it, the table records main versions only).
SELECT EXISTS (
    SELECT 1 FROM pg_attribute a
    WHERE a.attrelid = c.oid AND a.attname = 'line' AND NOT a.attisdropped
) AS has_line
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = @schema::text AND c.relname = 'river_migration' AND c.relkind IN ('r', 'p');

-- name: migration_rows
SELECT line, version, created_at FROM {schema}.river_migration;

-- name: migration_rows_main_only
SELECT 'main' AS line, version, created_at FROM {schema}.river_migration;

-- name: migration_record
INSERT INTO {schema}.river_migration (line, version) VALUES (@line::text, @version::bigint);

-- name: migration_record_main_only
INSERT INTO {schema}.river_migration (version) VALUES (@version::bigint);

-- name: migration_forget
DELETE FROM {schema}.river_migration WHERE line = @line::text AND version = @version::bigint;

-- name: migration_forget_main_only
DELETE FROM {schema}.river_migration WHERE version = @version::bigint;

-- name: migration_lock
-- Concurrent migrators of one schema serialise on this session lock.
SELECT pg_advisory_lock(@key::bigint);

-- name: migration_unlock
SELECT pg_advisory_unlock(@key::bigint);

-- name: migration_search_path
-- Inside each migration's transaction: pg_catalog stays implicitly first; pg_temp
-- goes last so that a temporary table can never stand in for one of ours.
SET LOCAL search_path TO {schema}, pg_temp;

-- name: schema_exists
SELECT 1 FROM pg_namespace WHERE nspname = @schema::text;

-- name: schema_create
CREATE SCHEMA {schema};

-- name: schema_columns
-- The columns of the library's tables in @schema, for the schema check: which of
-- what the library reads and writes are there.
SELECT c.relname AS table_name, a.attname AS column_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = @schema::text AND c.relname = ANY(@tables::text[])
    AND c.relkind IN ('r', 'p');

-- name: schema_indexes
SELECT i.relname AS index_name
FROM pg_class i
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = @schema::text AND i.relkind = 'i' AND i.relname = ANY(@names::text[]);
