-- main 003: tags become a non-null array, empty by default.

ALTER TABLE river_job ALTER COLUMN tags SET DEFAULT '{}';

-- Rows written before this version may hold NULL; the ALTER above already holds
-- the table's exclusive lock, so no new NULL can slip in before NOT NULL is set.
UPDATE river_job SET tags = '{}' WHERE tags IS NULL;

ALTER TABLE river_job ALTER COLUMN tags SET NOT NULL;
