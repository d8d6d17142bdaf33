-- Completion hooks (PostgreSQL's 0010 mirrors it): a task may name a URL
-- that gets a signed JSON POST when one of its runs ends.
--
-- `hook_url` is the task's URL, NULL for none. A run end of a task with one
-- writes a `hook_deliveries` row in the run end's own transaction (a crash
-- never loses one); the engine's delivery loop (server/src/engine/hooks.rs)
-- claims due rows, POSTs, and records each try in `hook_attempts`.
ALTER TABLE tasks ADD COLUMN hook_url TEXT;

CREATE TABLE hook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id          INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- One delivery per run end.
    run_id           INTEGER NOT NULL UNIQUE REFERENCES runs (id) ON DELETE CASCADE,
    -- The task's URL when the run ended.
    url              TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Tries so far; each claim counts one.
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- `attempts` when a user last asked for a retry: the retry budget counts
    -- from there.
    retry_from       INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is due (also: until when a claim holds it).
    next_attempt_at  INTEGER,
    -- The node whose claim holds it, until `next_attempt_at`.
    claimed_by       TEXT,
    created_at       INTEGER NOT NULL,
    -- When it was delivered or given up.
    finished_at      INTEGER
);
CREATE INDEX hook_deliveries_due ON hook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX hook_deliveries_task ON hook_deliveries (task_id, run_id);

CREATE TABLE hook_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  INTEGER NOT NULL REFERENCES hook_deliveries (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    node         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    -- The receiver's HTTP status; NULL when none came (refused, timed out).
    status_code  INTEGER,
    error        TEXT
);
CREATE INDEX hook_attempts_delivery ON hook_attempts (delivery_id, id);
