-- Task counts by status without counting the tasks table.
--
-- `GET /stats`, `/metrics` and the dashboard, which polls them, asked for
-- `SELECT status, count(*) FROM tasks GROUP BY status`: a walk of the whole
-- status index, ever longer as history grows, repeated by every poll of every
-- client: on a busy node that is watched, a large share of the server's time.
-- Instead every transaction that moves tasks into or out of a status adds
-- what it moved to this table, in the same transaction, so a count is a read
-- of six rows and always agrees with the tasks a reader sees.
--
-- No trigger here keeps it: a trigger fires on the engine's hot connection
-- too, once per claimed or finished task, and made every claim and run end
-- slower, watched or not. The store keeps it instead
-- (server/src/store/sqlite/counts.rs): the sqlx writer with triggers of its
-- own (TEMP ones), the engine's connection by summing what its statements
-- moved and writing that once per transaction. A later migration that moves
-- tasks must recount this table.

CREATE TABLE task_counts (
    status  TEXT    PRIMARY KEY,
    n       INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO task_counts (status, n)
    SELECT status, count(*) FROM tasks GROUP BY status;
