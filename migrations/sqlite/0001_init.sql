-- Stepwise schema for SQLite (one node). PostgreSQL's 0001 mirrors it.
--
-- Conventions:
--   * times are INTEGER milliseconds since the Unix epoch (UTC);
--   * states are lowercase TEXT with a CHECK listing exactly the texts of the
--     Rust enums in server/src/store/model.rs;
--   * JSON is stored as TEXT;
--   * booleans are INTEGER 0/1;
--   * everything a task owns goes with it (ON DELETE CASCADE), so child
--     foreign-key columns are indexed (SQLite scans children on delete).
-- Never edit this file once released: add 0002_… instead.

-- A task: the user's definition plus its scheduling state.
CREATE TABLE tasks (
    -- AUTOINCREMENT: ids are shown to users and used as list cursors, so an id
    -- is never handed out twice, even after the newest task is deleted.
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT    NOT NULL,
    -- Optional unique key: creating a task with an existing code replaces it.
    code                TEXT    UNIQUE,
    status              TEXT    NOT NULL CHECK (status IN
                            ('disabled', 'scheduled', 'running', 'completed', 'failed', 'cancelled')),
    -- Priority::rank: 0 low, 1 normal, 2 high (higher is claimed first).
    priority            INTEGER NOT NULL CHECK (priority IN (0, 1, 2)),
    start_at            INTEGER,
    run_interval        INTEGER NOT NULL CHECK (run_interval >= 0),
    max_execution_time  INTEGER NOT NULL,
    max_attempts        INTEGER NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    progress            REAL    NOT NULL DEFAULT 0,
    message             TEXT,
    last_result         TEXT    CHECK (last_result IN ('success', 'failed', 'interrupted')),
    last_run_at         INTEGER,
    next_run_at         INTEGER,
    created_by          TEXT,
    -- The run a node is executing (NULL when not running). No foreign key:
    -- runs reference tasks, and this pointer is maintained by claim/finish.
    current_run_id      INTEGER,
    -- The lease of the node running it; the rescuer takes back expired ones.
    lease_owner         TEXT,
    lease_expires_at    INTEGER,
    -- A user asked to cancel the running run; its executor stops it.
    cancel_requested    INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    -- Set when a run ended with RunEnd.resume_next: the next claim reuses the
    -- steps this run completed (a retry continues where it stopped).
    resume_from_run_id  INTEGER,
    -- Set by "run now" and consumed by the next claim: why the run starts
    -- ('manual' or 'step') and, for a single-step run, which step.
    pending_trigger     TEXT    CHECK (pending_trigger IN ('schedule', 'manual', 'retry', 'step')),
    pending_step_id     INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    -- When its last run ended (or it was cancelled).
    finished_at         INTEGER
);

-- Claiming: due tasks by priority, then due time (then id, the rowid, which
-- every index carries). A partial index holds only scheduled tasks, and
-- claim_due reads it once per priority, so a claim touches about `limit`
-- entries whatever the backlog of future tasks looks like.
CREATE INDEX tasks_due ON tasks (priority, next_run_at) WHERE status = 'scheduled';
-- Listing by status, newest first. It also serves the rescuer's lease-expiry
-- and by-node queries: running tasks are few (at most the nodes' concurrency),
-- so a dedicated lease index would only add work to every claim and finish.
CREATE INDEX tasks_status ON tasks (status, id);
-- Cleanup by status and age.
CREATE INDEX tasks_status_updated ON tasks (status, updated_at);
-- Listing by code uses the UNIQUE index above.

-- AbanteCart's task_details: key → JSON, handed to steps through context().
CREATE TABLE task_details (
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    key      TEXT    NOT NULL,
    value    TEXT    NOT NULL,  -- JSON
    PRIMARY KEY (task_id, key)
) WITHOUT ROWID;

-- Secrets, encrypted by the server before they get here; only names go out.
CREATE TABLE task_secrets (
    task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    PRIMARY KEY (task_id, name)
) WITHOUT ROWID;

-- The steps of a task as the user defined them. Replacing a task (same code)
-- deletes and re-creates its steps; step_runs keep copies of what they need.
CREATE TABLE steps (
    id                       INTEGER PRIMARY KEY,
    task_id                  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    sort_order               INTEGER NOT NULL,
    controller               TEXT    NOT NULL,  -- module path
    settings                 TEXT    NOT NULL,  -- JSON
    max_execution_time       INTEGER NOT NULL,
    max_memory               INTEGER,
    interrupt_on_step_fault  INTEGER NOT NULL CHECK (interrupt_on_step_fault IN (0, 1)),
    status                   TEXT    NOT NULL CHECK (status IN ('scheduled', 'disabled'))
);
CREATE INDEX steps_task ON steps (task_id, sort_order);
-- Claim's "no enabled step on an inactive module" and the list filter by module.
CREATE INDEX steps_controller ON steps (controller, task_id);

-- One execution attempt of a task.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- shown to users, never reused
    task_id      INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN
                     ('running', 'completed', 'failed', 'cancelled', 'interrupted')),
    trigger      TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry', 'step')),
    node         TEXT    NOT NULL,
    message      TEXT,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX runs_task ON runs (task_id, id);

-- One step within one run. step_id has no foreign key: the step may have been
-- replaced since, and history stays readable through the copied
-- sort_order/controller.
CREATE TABLE step_runs (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id      INTEGER NOT NULL,
    sort_order   INTEGER NOT NULL,
    controller   TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN
                     ('pending', 'running', 'completed', 'failed', 'interrupted', 'skipped', 'reused')),
    module_hash  TEXT,     -- the module version this step ran (pinned at start)
    outcome      TEXT,     -- JSON: the typed StepOutcome
    result       TEXT,     -- JSON: the step's output
    error        TEXT,
    progress     REAL    NOT NULL DEFAULT 0,
    message      TEXT,
    fuel_used    INTEGER NOT NULL DEFAULT 0,
    peak_memory  INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER,
    finished_at  INTEGER,
    UNIQUE (run_id, step_id)
);

-- Content-addressed module bytes (sha256 hex). Kept after their path moves to
-- another hash, so a run can still load the version it pinned.
CREATE TABLE module_blobs (
    hash        TEXT    PRIMARY KEY,
    bytes       BLOB    NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Registered module paths (e.g. tool/backup/dumptables) → current blob.
CREATE TABLE modules (
    path        TEXT    PRIMARY KEY,
    hash        TEXT    NOT NULL REFERENCES module_blobs (hash),
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Named files steps write during a run (one per name per run; append grows it).
CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     INTEGER,
    name        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (run_id, name)
);
CREATE INDEX artifacts_task ON artifacts (task_id, name, run_id);

-- Bytes a step saves so a retry continues where it stopped. Cleared when a
-- fresh (non-resuming) run starts.
CREATE TABLE checkpoints (
    task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id     INTEGER NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    data        BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, step_id)
) WITHOUT ROWID;
CREATE INDEX checkpoints_step ON checkpoints (step_id);

-- Persisted status changes and log lines, in insertion order per task.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    run_id      INTEGER,
    step_id     INTEGER,
    kind        TEXT    NOT NULL,  -- 'task', 'step' or 'log' (free text, not a state)
    level       TEXT,
    message     TEXT    NOT NULL,
    data        TEXT,   -- JSON
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_task ON events (task_id, id);
-- Retention (prune) deletes by age.
CREATE INDEX events_created ON events (created_at);

-- API tokens, stored as hashes. Revoked tokens stay for the record.
CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_hash    TEXT    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
