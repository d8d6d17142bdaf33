-- Step ids are never handed out twice.
--
-- `steps.id` was a plain INTEGER PRIMARY KEY, which SQLite numbers max + 1:
-- deleting the newest task freed its step ids for the next task created,
-- and the deleted steps' ids live on in history (`step_runs.step_id`,
-- `events.step_id`, `artifacts.step_id`, which have no foreign key), so two
-- different steps could share a history. AUTOINCREMENT keeps the highest id
-- ever used in `sqlite_sequence`, and adding it takes a rebuild of the table.
-- (Tasks and runs were AUTOINCREMENT from the start.)
--
-- The rebuild follows SQLite's procedure for changing a table: create the
-- new table, copy, drop the old one, rename. It needs foreign keys off
-- (`checkpoints.step_id` refers to `steps`: dropping it would cascade), so
-- the store runs migrations on a connection without them and checks every
-- foreign key afterwards (server/src/store/sqlite/mod.rs, `migrate`).

CREATE TABLE steps_autoincrement (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id                  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    sort_order               INTEGER NOT NULL,
    controller               TEXT    NOT NULL,  -- module path
    settings                 TEXT    NOT NULL,  -- JSON
    max_execution_time       INTEGER NOT NULL,
    max_memory               INTEGER,
    interrupt_on_step_fault  INTEGER NOT NULL CHECK (interrupt_on_step_fault IN (0, 1)),
    status                   TEXT    NOT NULL CHECK (status IN ('scheduled', 'disabled'))
);
INSERT INTO steps_autoincrement (id, task_id, sort_order, controller, settings,
        max_execution_time, max_memory, interrupt_on_step_fault, status)
    SELECT id, task_id, sort_order, controller, settings,
           max_execution_time, max_memory, interrupt_on_step_fault, status
    FROM steps;
DROP TABLE steps;
ALTER TABLE steps_autoincrement RENAME TO steps;
CREATE INDEX steps_task ON steps (task_id, sort_order);
-- Claim's "no enabled step on an inactive module" and the list filter by module.
CREATE INDEX steps_controller ON steps (controller, task_id);

-- The ids history already holds count as used: the sequence starts above the
-- highest step id any history row names, not only above the surviving steps
-- (the copy above set it to theirs, if there were any; `sqlite_sequence` has
-- no key, hence an update or an insert).
UPDATE sqlite_sequence
    SET seq = max(seq,
                  coalesce((SELECT max(step_id) FROM step_runs), 0),
                  coalesce((SELECT max(step_id) FROM events), 0),
                  coalesce((SELECT max(step_id) FROM artifacts), 0))
    WHERE name = 'steps';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'steps', max(coalesce((SELECT max(step_id) FROM step_runs), 0),
                        coalesce((SELECT max(step_id) FROM events), 0),
                        coalesce((SELECT max(step_id) FROM artifacts), 0))
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'steps');
