-- Today's run end: the task, the run and the step run updated.
BEGIN;
WITH ended AS (UPDATE tasks AS t SET status = 'completed', last_result = 'success',
                 next_run_at = NULL, progress = 1, finished_at = 4, updated_at = 4,
                 current_run_id = NULL, lease_owner = NULL, lease_expires_at = NULL
               FROM unnest(':tasks'::bigint[], ':runs'::bigint[]) AS u(task, run)
               WHERE t.id = u.task AND t.current_run_id = u.run AND t.status = 'running'
               RETURNING u.run),
steps_done AS (UPDATE step_runs AS sr SET status = 'completed', outcome = '{"kind":"done"}',
                 result = '{}', progress = 1, fuel_used = 1000, peak_memory = 65536,
                 started_at = 3, finished_at = 4, module_hash = 'abc'
               WHERE sr.id = ANY(':step_runs'::bigint[]) AND sr.status IN ('pending', 'running'))
UPDATE runs AS r SET status = 'completed', finished_at = 4, rescued = FALSE
FROM ended AS e WHERE r.id = e.run;
COMMIT;
