-- A peer's claim (graphile-worker's shape), after lock-queue-rows.sql: one narrow row
-- per job, no history. What it returns (\gset) is what the worker knows when it
-- completes the jobs.
SELECT coalesce(array_agg(id), '{}') AS jobs FROM locked
\gset
COMMIT;
