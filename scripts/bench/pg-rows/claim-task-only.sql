-- A claim that writes no history: the task marked running (the run's id taken from
-- its sequence) and its steps read, which the executor needs. What it returns (\gset)
-- is what the executor knows when it writes the end.
BEGIN;
SET LOCAL synchronous_commit = off;
WITH due AS (SELECT id FROM tasks
             WHERE status = 'scheduled' AND priority = 1 AND next_run_at <= 9000000000000
             ORDER BY next_run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED),
claimed AS (UPDATE tasks AS t SET status = 'running', attempts = t.attempts + 1,
              lease_owner = 'n:client_id', lease_expires_at = 3, last_run_at = 2, updated_at = 2,
              cancel_requested = FALSE,
              current_run_id = nextval((SELECT pg_get_serial_sequence('runs', 'id')::regclass)),
              pending_trigger = NULL, pending_step_id = NULL, progress = 0, message = NULL
            FROM due WHERE t.id = due.id
            RETURNING t.id, t.current_run_id, t.attempts)
SELECT coalesce(array_agg(c.id), '{}') AS tasks, coalesce(array_agg(c.current_run_id), '{}') AS runs,
       coalesce(array_agg(c.attempts), '{}') AS attempts, coalesce(array_agg(st.id), '{}') AS steps,
       coalesce(array_agg(st.controller), '{}') AS controllers
FROM claimed AS c JOIN steps AS st ON st.task_id = c.id
\gset
COMMIT;
