-- Only tasks that have a code are in the index of codes.
--
-- Most tasks have none, and a UNIQUE constraint indexes NULLs too: every
-- update that moves a task to another status (a claim, a run's end) writes
-- a new row version, and each new version took an entry in this index as
-- well as in the others, for a NULL no lookup ever asks for. A partial
-- index keeps codes unique the same way, and `code = $1` (never NULL) reads
-- it as before. An upsert names it by its predicate:
-- `ON CONFLICT (code) WHERE code IS NOT NULL`.

ALTER TABLE tasks DROP CONSTRAINT tasks_code_key;
CREATE UNIQUE INDEX tasks_code ON tasks (code) WHERE code IS NOT NULL;
