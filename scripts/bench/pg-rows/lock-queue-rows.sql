-- (The start of a claim from narrow queue rows, the peer's shape: the due rows locked
-- where they lie, as the relation `locked` (id, task_id, payload) the claim goes on from.)
BEGIN;
SET LOCAL synchronous_commit = off;
WITH due AS (SELECT id FROM bench_jobs
             WHERE locked_at IS NULL AND run_at <= now()
             ORDER BY priority, run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED),
locked AS (UPDATE bench_jobs AS j SET locked_at = now(), locked_by = 'n:client_id',
             attempts = j.attempts + 1, updated_at = now()
           FROM due WHERE j.id = due.id
           RETURNING j.id, j.task_id, j.payload)
