-- Task counts by status without counting the tasks table.
--
-- `GET /stats` (and the dashboard, which polls it) asked for
-- `SELECT status, count(*) FROM tasks GROUP BY status`: a scan of every task,
-- ~10 ms at 40,000 tasks, ever longer as history grows, and repeated by every
-- poll of every client. Instead, every statement that inserts, updates or
-- deletes tasks appends what it changed to `task_count_deltas` (one row per
-- status it moved, from the statement's transition tables), and a count is
-- the sum of those rows: a read of a few rows. Appending never waits for
-- another transaction (a counter row per status would: every writer on every
-- node would queue on its lock until the holder commits). Reading compacts
-- the rows now and then (server/src/store/postgres/tasks.rs): deleting the
-- rows it saw and inserting their sums, in one transaction, is correct even
-- while writers append and another node compacts too.
--
-- SQLite has no such table: one writer, and its count reads a covering index
-- without blocking it.

CREATE TABLE task_count_deltas (
    status  TEXT   NOT NULL,
    delta   BIGINT NOT NULL
);

INSERT INTO task_count_deltas (status, delta)
    SELECT status, count(*) FROM tasks GROUP BY status;

CREATE FUNCTION stepwise_count_inserted_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, delta)
        SELECT status, count(*) FROM inserted GROUP BY status;
    RETURN NULL;
END
$$;

CREATE FUNCTION stepwise_count_deleted_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, delta)
        SELECT status, -count(*) FROM deleted GROUP BY status;
    RETURN NULL;
END
$$;

-- Most updates move no task to another status (progress, leases): they
-- append nothing.
CREATE FUNCTION stepwise_count_updated_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, delta)
        SELECT status, sum(delta) FROM (
            SELECT status, 1 AS delta FROM updated
            UNION ALL
            SELECT status, -1 AS delta FROM replaced
        ) AS moved
        GROUP BY status HAVING sum(delta) <> 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION stepwise_count_inserted_tasks();
CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION stepwise_count_deleted_tasks();
CREATE TRIGGER tasks_counted_on_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS replaced NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION stepwise_count_updated_tasks();
