-- A peer's completion (graphile-worker's shape): the jobs' rows deleted.
BEGIN;
DELETE FROM bench_jobs WHERE id = ANY(':jobs'::bigint[]) AND locked_by = 'n:client_id';
COMMIT;
