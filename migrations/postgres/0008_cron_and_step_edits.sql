-- Cron schedules beside run_interval, and steps edited without re-posting
-- their task (see SQLite's 0008).

ALTER TABLE tasks ADD COLUMN cron TEXT;
ALTER TABLE tasks ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';

ALTER TABLE steps ADD COLUMN edited_at BIGINT;
