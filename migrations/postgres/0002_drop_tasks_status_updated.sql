-- As SQLite's 0002: the index cost every status change a write, and its one
-- user (cleanup of finished tasks by age) walks `tasks_status` instead.
DROP INDEX tasks_status_updated;
