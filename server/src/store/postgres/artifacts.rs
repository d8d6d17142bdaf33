//! Run artifacts: named files steps write and append to, stored as chunks
//! (migration 0003). An `artifacts` row holds the name, owner and total size;
//! each write or append adds one `artifact_chunks` row with only its bytes.

use super::PostgresStore;
use super::rows::{ms, time};
use crate::store::{Artifact, ArtifactChunks, ArtifactOverCap, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

/// Which artifact a write goes to.
pub(super) struct ArtifactTarget<'a> {
    pub task_id: i64,
    pub run_id: i64,
    pub step_id: i64,
    pub name: &'a str,
}

/// Write (`append = false`: replace) or append, in one transaction.
///
/// The artifact row is made sure to exist, then locked (`FOR UPDATE`), and
/// the cap is checked against its recorded size before anything is written:
/// two writers of one artifact (on two nodes, say) take turns, so neither
/// can pass the cap by checking a size the other is changing. A refused
/// write returns before committing, and the rollback takes back the row it
/// may have created: the artifact is left as it was.
pub(super) async fn write_artifact(
    store: &PostgresStore,
    target: ArtifactTarget<'_>,
    data: &[u8],
    append: bool,
    max_bytes: i64,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    let result = write_artifact_in(&mut tx, target, data, append, max_bytes, now).await;
    super::settle(tx, result).await
}

async fn write_artifact_in(
    tx: &mut PgConnection,
    target: ArtifactTarget<'_>,
    data: &[u8],
    append: bool,
    max_bytes: i64,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let added = i64::try_from(data.len()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO artifacts (task_id, run_id, step_id, name, size, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $5) ON CONFLICT (run_id, name) DO NOTHING",
    )
    .bind(target.task_id)
    .bind(target.run_id)
    .bind(target.step_id)
    .bind(target.name)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    let (id, size): (i64, i64) =
        sqlx::query_as("SELECT id, size FROM artifacts WHERE run_id = $1 AND name = $2 FOR UPDATE")
            .bind(target.run_id)
            .bind(target.name)
            .fetch_one(&mut *tx)
            .await?;
    let kept = if append { size } else { 0 };
    let size = kept.saturating_add(added);
    if size > max_bytes {
        return Err(StoreError::ArtifactOverCap(ArtifactOverCap {
            name: target.name.to_string(),
            size,
            limit: max_bytes,
        }));
    }
    if !append {
        sqlx::query("DELETE FROM artifact_chunks WHERE artifact_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE artifacts SET size = $2, step_id = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(size)
        .bind(target.step_id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    if !data.is_empty() {
        sqlx::query("INSERT INTO artifact_chunks (artifact_id, data) VALUES ($1, $2)")
            .bind(id)
            .bind(data)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn list_artifacts(
    store: &PostgresStore,
    task_id: i64,
) -> StoreResult<Vec<Artifact>> {
    let rows = sqlx::query(
        "SELECT run_id, step_id, name, size, created_at FROM artifacts WHERE task_id = $1 \
         ORDER BY run_id DESC, name",
    )
    .bind(task_id)
    .fetch_all(&store.pool)
    .await?;
    let artifact = |row: &PgRow| -> Result<Artifact, sqlx::Error> {
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

/// The newest artifact of this name for the task (or of the given run), its
/// size and chunk ids, read in one statement (one snapshot: the size and the
/// chunks agree even while a writer appends).
pub(super) async fn artifact_chunks(
    store: &PostgresStore,
    task_id: i64,
    name: &str,
    run_id: Option<i64>,
) -> StoreResult<Option<ArtifactChunks>> {
    let found: Option<(i64, Vec<i64>)> = sqlx::query_as(
        "SELECT a.size, ARRAY(SELECT c.id FROM artifact_chunks AS c \
                               WHERE c.artifact_id = a.id ORDER BY c.id) \
         FROM artifacts AS a \
         WHERE a.task_id = $1 AND a.name = $2 AND ($3::bigint IS NULL OR a.run_id = $3) \
         ORDER BY a.run_id DESC LIMIT 1",
    )
    .bind(task_id)
    .bind(name)
    .bind(run_id)
    .fetch_optional(&store.pool)
    .await?;
    Ok(found.map(|(size, chunk_ids)| ArtifactChunks { size, chunk_ids }))
}

pub(super) async fn artifact_chunk(
    store: &PostgresStore,
    chunk_id: i64,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT data FROM artifact_chunks WHERE id = $1")
            .bind(chunk_id)
            .fetch_optional(&store.pool)
            .await?,
    )
}
