-- Artifacts are stored as chunks: each write or append adds one row.
--
-- Before, an artifact was one BLOB and an append rewrote it whole
-- (`data || new`): a 64 MiB artifact written in 64 KiB appends copied about
-- 32 GiB through the page cache and the WAL (BENCHMARKS.md, "Artifacts written in appends").
-- Now an append inserts one row holding only the new bytes, an overwrite
-- deletes the artifact's chunks and inserts one, and a read concatenates the
-- chunks in id order. `artifacts` keeps the name, the owner and the total
-- size, so listing and the size cap never read the bytes.

CREATE TABLE artifact_chunks (
    -- Id order is write order, so an artifact's chunks read back in the
    -- order written. AUTOINCREMENT: an id is never handed out twice, so a
    -- download streaming chunk by chunk can never fetch another artifact's
    -- bytes under the id of a chunk deleted meanwhile (overwritten).
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    artifact_id  INTEGER NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    data         BLOB    NOT NULL
);
-- Reading an artifact in order, and the cascade when it is deleted.
CREATE INDEX artifact_chunks_artifact ON artifact_chunks (artifact_id, id);

-- Existing artifacts become one chunk each (an empty one gets none).
INSERT INTO artifact_chunks (artifact_id, data)
    SELECT id, data FROM artifacts WHERE length(data) > 0 ORDER BY id;

ALTER TABLE artifacts DROP COLUMN data;
