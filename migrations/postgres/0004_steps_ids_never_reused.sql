-- SQLite's 0004 rebuilds `steps` with AUTOINCREMENT so that step ids are never
-- handed out twice. Here every id is an identity column from 0001 on, and a
-- sequence never goes back, even after the newest rows are deleted: there is
-- nothing to change. The migration keeps the number so both drivers' histories
-- line up; it only records the guarantee on the column.
COMMENT ON COLUMN steps.id IS
    'Identity: never handed out twice (history rows keep step ids without a foreign key)';
