-- No history at all: the claim and the run's end update the task row only.
-- No design that keeps the tasks table can write less.
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
WITH mine AS (SELECT id FROM tasks WHERE status = 'running' AND lease_owner = 'n:client_id')
UPDATE tasks AS t SET status = 'completed', last_result = 'success', next_run_at = NULL,
       progress = 1, finished_at = 4, updated_at = 4, current_run_id = NULL,
       lease_owner = NULL, lease_expires_at = NULL
FROM mine WHERE t.id = mine.id;
COMMIT;
