-- The language a module was written in (Rust, Python, JavaScript, …), read
-- from the component's `producers` section at upload (see
-- server/src/runtime/language.rs), for the dashboard's Modules view. It is the
-- blob's, since the same bytes are the same program whatever path names them.
-- NULL for blobs uploaded before this migration and for components that do
-- not say.

ALTER TABLE module_blobs ADD COLUMN language TEXT;
