-- main 007: a notification table, the unused client tables gone, and two defaults.

-- River's SQLite driver, which has no LISTEN/NOTIFY, polls this table instead.
-- Postgres drivers (ours included) never write to it; it exists so that the
-- schema is the one River expects.
CREATE TABLE river_notification (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    payload text NOT NULL,
    topic text NOT NULL,
    CONSTRAINT topic_length CHECK (length(topic) > 0 AND length(topic) < 128)
);

-- Cleaner: deletes notifications older than a cutoff.
CREATE INDEX river_notification_created_at_idx ON river_notification (created_at);

-- Listener poll: the notifications of one topic after the last id seen.
CREATE INDEX river_notification_topic_id_idx ON river_notification (topic, id);

DROP TABLE river_client_queue;
DROP TABLE river_client;

-- The documented default (25 attempts) now also holds for plain SQL inserts.
ALTER TABLE river_job ALTER COLUMN max_attempts SET DEFAULT 25;

ALTER TABLE river_queue ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP;
