-- main 005 (down): back to a river_migration of main versions only; no unique key
-- column and no client tables.

-- The old table has no line column, so rows of any other line would be lost: refuse.
DO $$
DECLARE
    other_lines text;
BEGIN
    IF to_regclass('river_migration') IS NULL THEN
        RETURN;
    END IF;

    SELECT string_agg(DISTINCT line, ', ' ORDER BY line) INTO other_lines
    FROM river_migration
    WHERE line <> 'main';

    IF other_lines IS NOT NULL THEN
        RAISE EXCEPTION 'cannot roll back main 005: river_migration records other migration lines (%), which the pre-005 table cannot hold', other_lines
            USING HINT = 'Roll those lines back first (for pyriver: `pyriver migrate down --line pyriver --target 0`).';
    END IF;

    ALTER TABLE river_migration RENAME TO river_migration_old;

    CREATE TABLE river_migration (
        id bigserial PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now(),
        version bigint NOT NULL,
        CONSTRAINT version CHECK (version >= 1)
    );

    -- Uniqueness: the migrator records each version at most once.
    CREATE UNIQUE INDEX river_migration_version_idx ON river_migration USING btree (version);

    INSERT INTO river_migration (created_at, version)
    SELECT created_at, version FROM river_migration_old ORDER BY version;

    DROP TABLE river_migration_old;
END;
$$;

-- Dropping the column drops river_job_kind_unique_key_idx with it.
ALTER TABLE river_job DROP COLUMN unique_key;

DROP TABLE river_client_queue;
DROP TABLE river_client;
