-- main 002 (down): remove the job and leader tables and everything they use.

DROP TABLE river_leader;

-- Dropping the table drops its indexes, constraints and the river_notify trigger.
DROP TABLE river_job;

DROP FUNCTION river_job_notify();

DROP TYPE river_job_state;
