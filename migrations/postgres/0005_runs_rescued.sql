-- Runs the rescuer ended because their node stopped are marked, so that
-- statistics and alerts leave them out (see SQLite's 0005).

ALTER TABLE runs ADD COLUMN rescued BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE runs SET rescued = TRUE
    WHERE status = 'interrupted'
      AND (message LIKE 'interrupted: the server stopped while the run was in progress%'
           OR message LIKE 'interrupted: its node stopped renewing the lease%');
