-- What a module says of itself: title, description, version and the JSON
-- Schema of its step settings, as JSON text. Read from the component's
-- `stepwise:metadata` custom section at upload (or given beside it, for
-- toolchains that cannot write one) and checked there (see
-- server/src/api/module_metadata.rs). It is the path's, not the blob's: the
-- same bytes may be uploaded with different metadata beside them. NULL for
-- modules uploaded before this migration and for those that say nothing.

ALTER TABLE modules ADD COLUMN metadata TEXT;
