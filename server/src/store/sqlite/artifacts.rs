//! Run artifacts: named files steps write and append to, stored as chunks
//! (migration 0003). An `artifacts` row holds the name, owner and total size;
//! each write or append adds one `artifact_chunks` row with only its bytes,
//! so an append costs what it adds, whatever the artifact's size.

use super::SqliteStore;
use super::rows::{ms, time};
use crate::store::{Artifact, ArtifactChunks, ArtifactOverCap, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

/// Which artifact a write goes to.
pub(super) struct ArtifactTarget<'a> {
    pub task_id: i64,
    pub run_id: i64,
    pub step_id: i64,
    pub name: &'a str,
}

/// Write (`append = false`: replace) or append, in one transaction. The cap is
/// checked against the size recorded in `artifacts` before anything is
/// written; a refused write leaves the artifact as it was.
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
    let existing: Option<(i64, i64)> =
        sqlx::query_as("SELECT id, size FROM artifacts WHERE run_id = ?1 AND name = ?2")
            .bind(target.run_id)
            .bind(target.name)
            .fetch_optional(&mut *tx)
            .await?;
    let kept = match existing {
        Some((_, size)) if append => size,
        _ => 0,
    };
    let size = kept.saturating_add(added);
    if size > max_bytes {
        return Err(StoreError::ArtifactOverCap(ArtifactOverCap {
            name: target.name.to_string(),
            size,
            limit: max_bytes,
        }));
    }
    let artifact_id = match existing {
        Some((id, _)) => {
            if !append {
                sqlx::query("DELETE FROM artifact_chunks WHERE artifact_id = ?1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE artifacts SET size = ?2, step_id = ?3, updated_at = ?4 WHERE id = ?1",
            )
            .bind(id)
            .bind(size)
            .bind(target.step_id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            id
        }
        None => sqlx::query_scalar(
            "INSERT INTO artifacts (task_id, run_id, step_id, name, size, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
        )
        .bind(target.task_id)
        .bind(target.run_id)
        .bind(target.step_id)
        .bind(target.name)
        .bind(size)
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await?,
    };
    if !data.is_empty() {
        sqlx::query("INSERT INTO artifact_chunks (artifact_id, data) VALUES (?1, ?2)")
            .bind(artifact_id)
            .bind(data)
            .execute(&mut *tx)
            .await?;
    }
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

/// The newest artifact of this name for the task (or of the given run): its
/// id and size.
async fn find(
    conn: &mut SqliteConnection,
    task_id: i64,
    name: &str,
    run_id: Option<i64>,
) -> StoreResult<Option<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT id, size FROM artifacts WHERE task_id = ?1 AND name = ?2 AND (?3 IS NULL OR run_id = ?3) \
         ORDER BY run_id DESC LIMIT 1",
    )
    .bind(task_id)
    .bind(name)
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?)
}

pub(super) async fn artifact_chunks(
    store: &SqliteStore,
    task_id: i64,
    name: &str,
    run_id: Option<i64>,
) -> StoreResult<Option<ArtifactChunks>> {
    let mut tx = store.reader.begin().await?;
    let Some((id, size)) = find(&mut tx, task_id, name, run_id).await? else {
        return Ok(None);
    };
    let chunk_ids =
        sqlx::query_scalar("SELECT id FROM artifact_chunks WHERE artifact_id = ?1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    tx.rollback().await?;
    Ok(Some(ArtifactChunks { size, chunk_ids }))
}

pub(super) async fn artifact_chunk(
    store: &SqliteStore,
    chunk_id: i64,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT data FROM artifact_chunks WHERE id = ?1")
            .bind(chunk_id)
            .fetch_optional(&store.reader)
            .await?,
    )
}
