-- The servers sharing this database, as each last reported itself (at start,
-- at every heartbeat, when it stops), for `GET /api/v1/nodes` and the
-- dashboard's Nodes view. A SQLite database has one server at a time, so it
-- holds that server's row and those of earlier node ids.

CREATE TABLE nodes (
    id                TEXT PRIMARY KEY,
    address           TEXT,
    version           TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('running', 'draining', 'stopped')),
    started_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    running_runs      INTEGER NOT NULL DEFAULT 0
);
