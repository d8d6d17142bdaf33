-- Every status change of a task (two per run: claimed, then ended) moved an
-- entry of this index, and the engine's throughput is bounded by the one
-- writer: without it one-step tasks run about 5 % faster (BENCHMARKS.md,
-- session 7). Its one user, the explicit cleanup of finished tasks by age,
-- walks `tasks_status` (status, id) instead: ids grow with age, so the old
-- tasks it deletes come first.
DROP INDEX tasks_status_updated;
