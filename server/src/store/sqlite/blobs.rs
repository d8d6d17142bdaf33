//! Byte payloads: step checkpoints and module components (artifacts, which
//! grow by appends, are in [`super::artifacts`]).

use super::SqliteStore;
use super::rows::{
    MISSING_MODULE_COLUMNS, MODULE_SELECT, metadata_text, missing_module_task_from_row,
    module_from_row, ms,
};
use crate::store::{
    MissingModuleTask, Module, ModuleLimits, ModuleMetadata, StoreError, StoreResult,
};
use chrono::{DateTime, Utc};

// ---- checkpoints ----------------------------------------------------------

pub(super) async fn save_checkpoint(
    store: &SqliteStore,
    task_id: i64,
    step_id: i64,
    data: &[u8],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO checkpoints (task_id, step_id, data, updated_at) \
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM steps WHERE id = ?2) \
         ON CONFLICT (task_id, step_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
    )
    .bind(task_id)
    .bind(step_id)
    .bind(data)
    .bind(ms(now))
    .execute(&store.writer)
    .await?;
    Ok(())
}

pub(super) async fn load_checkpoint(
    store: &SqliteStore,
    task_id: i64,
    step_id: i64,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT data FROM checkpoints WHERE task_id = ?1 AND step_id = ?2")
            .bind(task_id)
            .bind(step_id)
            .fetch_optional(&store.reader)
            .await?,
    )
}

// ---- modules --------------------------------------------------------------

async fn module_on(conn: &mut sqlx::SqliteConnection, path: &str) -> StoreResult<Option<Module>> {
    let row = sqlx::query(&format!("{MODULE_SELECT} WHERE m.path = ?1"))
        .bind(path)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.as_ref().map(module_from_row).transpose()?)
}

fn module_not_found(path: &str) -> StoreError {
    StoreError::NotFound(format!("module `{path}`"))
}

/// Re-registering a path keeps its `active` flag and creation time.
pub(super) async fn put_module(
    store: &SqliteStore,
    path: &str,
    hash: &str,
    bytes: &[u8],
    language: Option<&str>,
    metadata: Option<&ModuleMetadata>,
    now: DateTime<Utc>,
) -> StoreResult<(Module, bool)> {
    let metadata = metadata_text(metadata)?;
    let mut tx = store.writer.begin().await?;
    sqlx::query(
        "INSERT INTO module_blobs (hash, bytes, size, created_at, language) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (hash) DO UPDATE SET language = excluded.language \
         WHERE module_blobs.language IS NULL AND excluded.language IS NOT NULL",
    )
    .bind(hash)
    .bind(bytes)
    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
    .bind(ms(now))
    .bind(language)
    .execute(&mut *tx)
    .await?;
    let created = module_on(&mut tx, path).await?.is_none();
    sqlx::query(
        "INSERT INTO modules (path, hash, active, created_at, updated_at, metadata) \
         VALUES (?1, ?2, 1, ?3, ?3, ?4) \
         ON CONFLICT (path) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at, \
             metadata = excluded.metadata",
    )
    .bind(path)
    .bind(hash)
    .bind(ms(now))
    .bind(metadata)
    .execute(&mut *tx)
    .await?;
    let module = module_on(&mut tx, path)
        .await?
        .ok_or_else(|| module_not_found(path))?;
    tx.commit().await?;
    Ok((module, created))
}

pub(super) async fn get_module(store: &SqliteStore, path: &str) -> StoreResult<Option<Module>> {
    let mut conn = store.reader.acquire().await?;
    module_on(&mut conn, path).await
}

pub(super) async fn list_modules(store: &SqliteStore) -> StoreResult<Vec<Module>> {
    let rows = sqlx::query(&format!("{MODULE_SELECT} ORDER BY m.path"))
        .fetch_all(&store.reader)
        .await?;
    Ok(rows.iter().map(module_from_row).collect::<Result<_, _>>()?)
}

pub(super) async fn set_module_active(
    store: &SqliteStore,
    path: &str,
    active: bool,
    now: DateTime<Utc>,
) -> StoreResult<Module> {
    update_module(store, path, Some(active), None, now).await
}

/// Change a module's `active` flag and limits (each when given); returns
/// the module as it is now.
pub(super) async fn update_module(
    store: &SqliteStore,
    path: &str,
    active: Option<bool>,
    limits: Option<ModuleLimits>,
    now: DateTime<Utc>,
) -> StoreResult<Module> {
    let mut tx = store.writer.begin().await?;
    let changed = sqlx::query(
        "UPDATE modules SET active = COALESCE(?2, active), \
                max_running = CASE WHEN ?3 THEN ?4 ELSE max_running END, \
                max_starts_per_minute = CASE WHEN ?3 THEN ?5 ELSE max_starts_per_minute END, \
                updated_at = ?6 \
         WHERE path = ?1",
    )
    .bind(path)
    .bind(active)
    .bind(limits.is_some())
    .bind(limits.and_then(|l| l.max_running))
    .bind(limits.and_then(|l| l.max_starts_per_minute))
    .bind(ms(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(module_not_found(path));
    }
    let module = module_on(&mut tx, path)
        .await?
        .ok_or_else(|| module_not_found(path))?;
    tx.commit().await?;
    Ok(module)
}

/// The path goes; the blob stays for runs that pinned it.
pub(super) async fn delete_module(store: &SqliteStore, path: &str) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM modules WHERE path = ?1")
        .bind(path)
        .execute(&store.writer)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(module_not_found(path));
    }
    Ok(())
}

pub(super) async fn module_bytes(store: &SqliteStore, hash: &str) -> StoreResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT bytes FROM module_blobs WHERE hash = ?1")
            .bind(hash)
            .fetch_optional(&store.reader)
            .await?,
    )
}

/// Tasks with a step on an unregistered module. The `steps_controller` index
/// gives each controller's steps; the anti-join probes `modules` by key.
pub(super) async fn missing_module_tasks(
    store: &SqliteStore,
    limit: i64,
) -> StoreResult<Vec<MissingModuleTask>> {
    let rows = sqlx::query(&format!(
        "SELECT DISTINCT {MISSING_MODULE_COLUMNS} FROM steps AS s JOIN tasks AS t ON t.id = s.task_id \
         WHERE NOT EXISTS (SELECT 1 FROM modules AS m WHERE m.path = s.controller) \
         ORDER BY module, task_id LIMIT ?1"
    ))
    .bind(limit)
    .fetch_all(&store.reader)
    .await?;
    Ok(rows
        .iter()
        .map(missing_module_task_from_row)
        .collect::<Result<_, _>>()?)
}
