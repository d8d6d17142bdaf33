-- (The end of a run end's statement: the run and its step run inserted, finished, from
-- the relation `ended` (run, task, attempt, step, controller) the statement began.)
runs_ended AS (INSERT INTO runs (id, task_id, attempt, status, trigger, node, started_at,
                                 finished_at, rescued)
               SELECT run, task, attempt, 'completed', 'schedule', 'n:client_id', 2, 4, FALSE
               FROM ended)
INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, outcome, result,
                       progress, fuel_used, peak_memory, started_at, finished_at, module_hash)
SELECT run, step, 0, controller, 'completed', '{"kind":"done"}', '{}', 1, 1000, 65536, 3, 4, 'abc'
FROM ended;
COMMIT;
