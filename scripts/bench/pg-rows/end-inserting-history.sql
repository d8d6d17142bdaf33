-- A run end that writes the history once: the task updated, then (insert-history.sql)
-- the run and its step run inserted, finished.
BEGIN;
WITH ended AS (UPDATE tasks AS t SET status = 'completed', last_result = 'success',
                 next_run_at = NULL, progress = 1, finished_at = 4, updated_at = 4,
                 current_run_id = NULL, lease_owner = NULL, lease_expires_at = NULL
               FROM unnest(':tasks'::bigint[], ':runs'::bigint[], ':attempts'::bigint[],
                           ':steps'::bigint[], ':controllers'::text[])
                    AS u(task, run, attempt, step, controller)
               WHERE t.id = u.task AND t.current_run_id = u.run AND t.status = 'running'
               RETURNING u.*),
