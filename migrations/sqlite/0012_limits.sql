-- Concurrency and rate limits (issue 20, item 2). A module may cap how many
-- runs using it run at once and how many start a minute (bulk mail must not
-- send 32 at once); a task may cap how many of its runs start a minute. NULL
-- is "no limit". The claim passes over a task that a limit holds back, and
-- reads of the task say which limit (server/src/api/waiting.rs).

ALTER TABLE modules ADD COLUMN max_running INTEGER;
ALTER TABLE modules ADD COLUMN max_starts_per_minute INTEGER;
ALTER TABLE tasks ADD COLUMN max_starts_per_minute INTEGER;

-- The slots that runs took of limited modules, one row per (module, run),
-- written by the claim for limited modules only: a module's running runs are
-- its rows whose run is still running, its starts of the last minute those
-- started within it. Rows older than a minute whose run ended are pruned by
-- the claim, so the table holds about a minute of a limited module's starts.
CREATE TABLE module_starts (
    module     TEXT NOT NULL,
    run_id     INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    PRIMARY KEY (module, run_id)
);
CREATE INDEX module_starts_by_time ON module_starts (module, started_at);
