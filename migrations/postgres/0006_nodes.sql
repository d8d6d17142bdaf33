-- The servers sharing this database, as each last reported itself (at start,
-- at every heartbeat, when it stops): `GET /api/v1/nodes`.

CREATE TABLE nodes (
    id                TEXT   PRIMARY KEY,
    address           TEXT,
    version           TEXT   NOT NULL,
    state             TEXT   NOT NULL CHECK (state IN ('running', 'draining', 'stopped')),
    started_at        BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    running_runs      BIGINT NOT NULL DEFAULT 0
);
