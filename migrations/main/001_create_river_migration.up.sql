-- main 001: the table that records which migrations have been applied.
--
-- This is the first shape of the table, as River created it: one row per applied
-- version of the main line. Version 005 rebuilds it keyed on (line, version).

CREATE TABLE river_migration (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL,
    CONSTRAINT version CHECK (version >= 1)
);

-- Uniqueness: the migrator records each version at most once.
CREATE UNIQUE INDEX river_migration_version_idx ON river_migration USING btree (version);
