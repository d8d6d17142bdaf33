-- The two foreign keys a claim checks for every task it claims go; the
-- deletes they cascaded are written out instead.
--
-- A claim inserts a run per task and a step run per step, and PostgreSQL
-- checked each insert against its parent with a statement of its own (a
-- trigger per row, run at the end of the claim): about a fifth of the
-- claim's time, for parents the same statement has just locked or written.
-- The parents are certain by construction: a run is inserted only for a
-- task the claim holds locked, a step run only beside the run it belongs to.
--
-- What the keys also did, cascade a task's delete to its runs and a run's
-- delete to its step runs, the three paths that delete them do now (see
-- server/src/store/postgres/tasks.rs and records.rs), and the store's tests
-- check after every conformance case that no run is left without its task
-- and no step run without its run. Every other foreign key stays.

ALTER TABLE runs DROP CONSTRAINT runs_task_id_fkey;
ALTER TABLE step_runs DROP CONSTRAINT step_runs_run_id_fkey;
