-- River 0.44's main 008 ("job_id_autoincrement") makes job ids on SQLite never
-- reused after a delete. On PostgreSQL, river_job.id has always been drawn from a
-- sequence, which never hands out an id twice, so there is nothing to change: the
-- version is recorded so that a database migrated by River and one migrated by us
-- stay identical (River's PostgreSQL down migration is a no-op as well).
SELECT 1;
