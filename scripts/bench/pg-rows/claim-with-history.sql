-- Today's claim: a run and a step run inserted per task, the task marked running on
-- the run. What it returns (\gset) is what the executor knows when it writes the end.
BEGIN;
SET LOCAL synchronous_commit = off;
WITH due AS (SELECT id, attempts FROM tasks
             WHERE status = 'scheduled' AND priority = 1 AND next_run_at <= 9000000000000
             ORDER BY next_run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED),
started AS (INSERT INTO runs (task_id, attempt, status, trigger, node, started_at)
            SELECT id, attempts + 1, 'running', 'schedule', 'n:client_id', 2 FROM due
            RETURNING id, task_id),
marked AS (UPDATE tasks AS t SET status = 'running', attempts = t.attempts + 1,
             lease_owner = 'n:client_id', lease_expires_at = 3, last_run_at = 2, updated_at = 2,
             cancel_requested = FALSE, current_run_id = started.id, pending_trigger = NULL,
             pending_step_id = NULL, progress = 0, message = NULL
           FROM started WHERE t.id = started.task_id),
planned AS (INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, progress)
            SELECT s.id, st.id, st.sort_order, st.controller, 'pending', 0
            FROM started AS s JOIN steps AS st ON st.task_id = s.task_id
            RETURNING id, run_id)
SELECT coalesce(array_agg(s.task_id), '{}') AS tasks, coalesce(array_agg(s.id), '{}') AS runs,
       coalesce(array_agg(p.id), '{}') AS step_runs
FROM started AS s JOIN planned AS p ON p.run_id = s.id
\gset
COMMIT;
