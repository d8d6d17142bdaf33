-- Today's rows: the claim inserts a run and a step run per task and marks
-- the task running; the run's end updates all three.
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
           FROM started WHERE t.id = started.task_id)
INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, progress)
SELECT s.id, st.id, st.sort_order, st.controller, 'pending', 0
FROM started AS s JOIN steps AS st ON st.task_id = s.task_id;
COMMIT;
BEGIN;
WITH mine AS (SELECT id, current_run_id FROM tasks
              WHERE status = 'running' AND lease_owner = 'n:client_id'),
ended AS (UPDATE tasks AS t SET status = 'completed', last_result = 'success', next_run_at = NULL,
            progress = 1, finished_at = 4, updated_at = 4, current_run_id = NULL,
            lease_owner = NULL, lease_expires_at = NULL
          FROM mine WHERE t.id = mine.id
          RETURNING t.id AS task, mine.current_run_id AS run),
steps_done AS (UPDATE step_runs AS sr SET status = 'completed', outcome = '{"kind":"done"}',
                 result = '{}', progress = 1, fuel_used = 1000, peak_memory = 65536,
                 started_at = 3, finished_at = 4, module_hash = 'abc'
               FROM ended AS e WHERE sr.run_id = e.run)
UPDATE runs AS r SET status = 'completed', finished_at = 4, rescued = FALSE
FROM ended AS e WHERE r.id = e.run;
COMMIT;
