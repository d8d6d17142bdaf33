-- A run end that writes no history: the task updated.
BEGIN;
UPDATE tasks AS t SET status = 'completed', last_result = 'success', next_run_at = NULL,
       progress = 1, finished_at = 4, updated_at = 4, current_run_id = NULL,
       lease_owner = NULL, lease_expires_at = NULL
FROM unnest(':tasks'::bigint[], ':runs'::bigint[]) AS u(task, run)
WHERE t.id = u.task AND t.current_run_id = u.run AND t.status = 'running';
COMMIT;
