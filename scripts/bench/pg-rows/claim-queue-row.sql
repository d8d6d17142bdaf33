-- A claim from a queue of narrow rows beside the tasks, after lock-queue-rows.sql: the
-- task and its steps only read. What it returns (\gset) is what the executor knows.
SELECT coalesce(array_agg(l.id), '{}') AS jobs, coalesce(array_agg(t.id), '{}') AS tasks,
       coalesce(array_agg(t.attempts), '{}') AS attempts, coalesce(array_agg(st.id), '{}') AS steps,
       coalesce(array_agg(st.controller), '{}') AS controllers
FROM locked AS l JOIN tasks AS t ON t.id = l.task_id JOIN steps AS st ON st.task_id = t.id
\gset
COMMIT;
