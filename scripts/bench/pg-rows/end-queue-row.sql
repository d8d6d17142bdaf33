-- A run end beside a queue of narrow rows: the queue row deleted, the task updated
-- once, then (insert-history.sql) the run and its step run inserted, finished.
BEGIN;
WITH dequeued AS (DELETE FROM bench_jobs
                  WHERE id = ANY(':jobs'::bigint[]) AND locked_by = 'n:client_id'),
ended AS (UPDATE tasks AS t SET status = 'completed', attempts = u.attempt + 1,
            last_result = 'success', next_run_at = NULL, progress = 1, last_run_at = 2,
            finished_at = 4, updated_at = 4
          FROM unnest(':tasks'::bigint[], ':attempts'::bigint[], ':steps'::bigint[],
                      ':controllers'::text[]) AS u(task, attempt, step, controller)
          WHERE t.id = u.task AND t.status = 'scheduled'
          RETURNING u.task, u.attempt + 1 AS attempt, u.step, u.controller,
                    nextval((SELECT pg_get_serial_sequence('runs', 'id')::regclass)) AS run),
