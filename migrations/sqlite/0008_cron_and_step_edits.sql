-- Cron schedules beside run_interval, and steps edited without re-posting
-- their task (PostgreSQL's 0008 mirrors it).
--
-- `cron` is an expression the task recurs on (server/src/schedule.rs), NULL
-- for a task on `run_interval` or run once; the API lets no task have both a
-- cron and a non-zero run_interval. `timezone` is the IANA zone the
-- expression is read in, 'UTC' for every task until set.
ALTER TABLE tasks ADD COLUMN cron TEXT;
ALTER TABLE tasks ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';

-- When the step's module, settings or limits were last changed (ms since the
-- epoch; NULL: never since it was created). A retry reuses a step the run it
-- continues completed only if the step was not changed after that run
-- started: its result was made by what the step was then.
ALTER TABLE steps ADD COLUMN edited_at INTEGER;
