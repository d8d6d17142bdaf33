-- Runs the rescuer ended because their node stopped (a crash, a kill, a
-- restart) are marked, so statistics and alerts can leave them out: such a
-- run is `interrupted` like a run a limit stopped, but it says nothing about
-- the task or its modules — its retry does. Without the mark, every server
-- crash counted each run in flight as a failure and could raise the
-- low-success alert on its own.

ALTER TABLE runs ADD COLUMN rescued INTEGER NOT NULL DEFAULT 0 CHECK (rescued IN (0, 1));

-- Runs rescued before this migration are known by the message the rescuer
-- gives them (server/src/engine/rescuer.rs).
UPDATE runs SET rescued = 1
    WHERE status = 'interrupted'
      AND (message LIKE 'interrupted: the server stopped while the run was in progress%'
           OR message LIKE 'interrupted: its node stopped renewing the lease%');
