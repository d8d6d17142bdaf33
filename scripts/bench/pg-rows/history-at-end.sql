-- The history written once, at the run's end: the claim only marks the task
-- running (with the run's id taken from its sequence); the run's end updates
-- the task and inserts the run and its step run with their final values.
BEGIN;
SET LOCAL synchronous_commit = off;
WITH due AS (SELECT id FROM tasks
             WHERE status = 'scheduled' AND priority = 1 AND next_run_at <= 9000000000000
             ORDER BY next_run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED)
UPDATE tasks AS t SET status = 'running', attempts = t.attempts + 1,
       lease_owner = 'n:client_id', lease_expires_at = 3, last_run_at = 2, updated_at = 2,
       cancel_requested = FALSE,
       current_run_id = nextval((SELECT pg_get_serial_sequence('runs', 'id')::regclass)),
       pending_trigger = NULL, pending_step_id = NULL, progress = 0, message = NULL
FROM due WHERE t.id = due.id;
COMMIT;
BEGIN;
WITH mine AS (SELECT id, current_run_id, attempts FROM tasks
              WHERE status = 'running' AND lease_owner = 'n:client_id'),
ended AS (UPDATE tasks AS t SET status = 'completed', last_result = 'success', next_run_at = NULL,
            progress = 1, finished_at = 4, updated_at = 4, current_run_id = NULL,
            lease_owner = NULL, lease_expires_at = NULL
          FROM mine WHERE t.id = mine.id
          RETURNING t.id AS task, mine.current_run_id AS run, mine.attempts AS attempt),
runs_ended AS (INSERT INTO runs (id, task_id, attempt, status, trigger, node, started_at,
                                 finished_at, rescued)
               SELECT run, task, attempt, 'completed', 'schedule', 'n:client_id', 2, 4, FALSE
               FROM ended)
INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, outcome, result,
                       progress, fuel_used, peak_memory, started_at, finished_at, module_hash)
SELECT e.run, st.id, st.sort_order, st.controller, 'completed', '{"kind":"done"}', '{}', 1,
       1000, 65536, 3, 4, 'abc'
FROM ended AS e JOIN steps AS st ON st.task_id = e.task;
COMMIT;
