-- A run end that writes the history once: the task updated, the run and its step run
-- inserted, finished.
BEGIN;
WITH ended AS (UPDATE tasks AS t SET status = 'completed', last_result = 'success',
                 next_run_at = NULL, progress = 1, finished_at = 4, updated_at = 4,
                 current_run_id = NULL, lease_owner = NULL, lease_expires_at = NULL
               FROM unnest(':tasks'::bigint[], ':runs'::bigint[], ':attempts'::bigint[],
                           ':steps'::bigint[], ':controllers'::text[])
                    AS u(task, run, attempt, step, controller)
               WHERE t.id = u.task AND t.current_run_id = u.run AND t.status = 'running'
               RETURNING u.*),
runs_ended AS (INSERT INTO runs (id, task_id, attempt, status, trigger, node, started_at,
                                 finished_at, rescued)
               SELECT run, task, attempt, 'completed', 'schedule', 'n:client_id', 2, 4, FALSE
               FROM ended)
INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, outcome, result,
                       progress, fuel_used, peak_memory, started_at, finished_at, module_hash)
SELECT run, step, 0, controller, 'completed', '{"kind":"done"}', '{}', 1, 1000, 65536, 3, 4, 'abc'
FROM ended;
COMMIT;
