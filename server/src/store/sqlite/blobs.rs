//! Byte payloads: step checkpoints, run artifacts and module components.

use super::SqliteStore;
use super::rows::{ms, time};
use crate::store::{Artifact, Module, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

// ---- checkpoints ----------------------------------------------------------

pub(super) async fn save_checkpoint(
    store: &SqliteStore,
    task_id: i64,
    step_id: i64,
    data: &[u8],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO checkpoints (task_id, step_id, data, updated_at) VALUES (?1, ?2, ?3, ?4) \
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

pub(super) async fn clear_checkpoints(store: &SqliteStore, task_id: i64) -> StoreResult<()> {
    sqlx::query("DELETE FROM checkpoints WHERE task_id = ?1")
        .bind(task_id)
        .execute(&store.writer)
        .await?;
    Ok(())
}

// ---- artifacts ------------------------------------------------------------

/// Which artifact a write goes to.
pub(super) struct ArtifactTarget<'a> {
    pub task_id: i64,
    pub run_id: i64,
    pub step_id: i64,
    pub name: &'a str,
}

pub(super) async fn write_artifact(
    store: &SqliteStore,
    target: ArtifactTarget<'_>,
    data: &[u8],
    append: bool,
    max_bytes: i64,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let added = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let mut tx = store.writer.begin().await?;
    let existing: i64 = if append {
        sqlx::query_scalar("SELECT size FROM artifacts WHERE run_id = ?1 AND name = ?2")
            .bind(target.run_id)
            .bind(target.name)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0)
    } else {
        0
    };
    let size = existing.saturating_add(added);
    if size > max_bytes {
        return Err(StoreError::TooLarge(format!(
            "artifact `{}` would be {size} bytes, over the limit of {max_bytes} bytes",
            target.name
        )));
    }
    // Appending concatenates in SQL, so earlier chunks are not read back.
    // `||` works on text; the CASTs keep the bytes exact (no conversion
    // happens in a UTF-8 database).
    let sql = if append {
        "INSERT INTO artifacts (task_id, run_id, step_id, name, data, size, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
         ON CONFLICT (run_id, name) DO UPDATE SET \
             data = CAST(CAST(data AS TEXT) || CAST(excluded.data AS TEXT) AS BLOB), \
             size = size + excluded.size, step_id = excluded.step_id, updated_at = excluded.updated_at"
    } else {
        "INSERT INTO artifacts (task_id, run_id, step_id, name, data, size, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
         ON CONFLICT (run_id, name) DO UPDATE SET \
             data = excluded.data, size = excluded.size, step_id = excluded.step_id, \
             updated_at = excluded.updated_at"
    };
    sqlx::query(sql)
        .bind(target.task_id)
        .bind(target.run_id)
        .bind(target.step_id)
        .bind(target.name)
        .bind(data)
        .bind(added)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list_artifacts(
    store: &SqliteStore,
    task_id: i64,
) -> StoreResult<Vec<Artifact>> {
    let rows = sqlx::query(
        "SELECT run_id, step_id, name, size, created_at FROM artifacts WHERE task_id = ?1 \
         ORDER BY run_id DESC, name",
    )
    .bind(task_id)
    .fetch_all(&store.reader)
    .await?;
    let artifact = |row: &SqliteRow| -> Result<Artifact, sqlx::Error> {
        Ok(Artifact {
            run_id: row.try_get("run_id")?,
            step_id: row.try_get("step_id")?,
            name: row.try_get("name")?,
            size: row.try_get("size")?,
            created_at: time(row.try_get("created_at")?),
        })
    };
    Ok(rows.iter().map(artifact).collect::<Result<_, _>>()?)
}

pub(super) async fn read_artifact(
    store: &SqliteStore,
    task_id: i64,
    name: &str,
    run_id: Option<i64>,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT data FROM artifacts WHERE task_id = ?1 AND name = ?2 AND (?3 IS NULL OR run_id = ?3) \
         ORDER BY run_id DESC LIMIT 1",
    )
    .bind(task_id)
    .bind(name)
    .bind(run_id)
    .fetch_optional(&store.reader)
    .await?)
}

// ---- modules --------------------------------------------------------------

const MODULE_SELECT: &str = "SELECT m.path, m.hash, b.size, m.active, m.created_at, m.updated_at \
                             FROM modules AS m JOIN module_blobs AS b ON b.hash = m.hash";

fn module_from_row(row: &SqliteRow) -> Result<Module, sqlx::Error> {
    Ok(Module {
        path: row.try_get("path")?,
        hash: row.try_get("hash")?,
        size: row.try_get("size")?,
        active: row.try_get("active")?,
        created_at: time(row.try_get("created_at")?),
        updated_at: time(row.try_get("updated_at")?),
    })
}

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
    now: DateTime<Utc>,
) -> StoreResult<(Module, bool)> {
    let mut tx = store.writer.begin().await?;
    sqlx::query(
        "INSERT INTO module_blobs (hash, bytes, size, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash)
    .bind(bytes)
    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    let created = module_on(&mut tx, path).await?.is_none();
    sqlx::query(
        "INSERT INTO modules (path, hash, active, created_at, updated_at) VALUES (?1, ?2, 1, ?3, ?3) \
         ON CONFLICT (path) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
    )
    .bind(path)
    .bind(hash)
    .bind(ms(now))
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
    let mut tx = store.writer.begin().await?;
    let changed = sqlx::query("UPDATE modules SET active = ?2, updated_at = ?3 WHERE path = ?1")
        .bind(path)
        .bind(active)
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
