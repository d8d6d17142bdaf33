//! Runs after the claim: leases, step starts and ends, progress, the end of a
//! run, rescue queries and run history.

use super::SqliteStore;
use super::rows::{
    RUN_COLUMNS, json_ids, load_children, load_step_runs, ms, run_from_row, task_columns,
    task_from_row,
};
use crate::store::{Run, RunEnd, StoreError, StoreResult, Task, WriteAnswer, WriteOp};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;
use std::collections::HashMap;

/// Whether a cancel was requested for the task this run belongs to, while the
/// task is still on this run (`false` once the run is over or taken back).
pub(super) async fn cancel_requested(store: &SqliteStore, run_id: i64) -> StoreResult<bool> {
    let row: Option<(bool, Option<i64>)> = sqlx::query_as(
        "SELECT t.cancel_requested, t.current_run_id FROM runs AS r JOIN tasks AS t ON t.id = r.task_id \
         WHERE r.id = ?1",
    )
    .bind(run_id)
    .fetch_optional(&store.reader)
    .await?;
    match row {
        None => Err(StoreError::NotFound(format!("run {run_id}"))),
        Some((requested, current)) => Ok(requested && current == Some(run_id)),
    }
}

pub(super) async fn heartbeat(
    store: &SqliteStore,
    node: &str,
    run_ids: &[i64],
    lease_until: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = json_ids(run_ids.iter().copied());
    let cancelled: Vec<Option<i64>> = sqlx::query_scalar(
        "UPDATE tasks SET lease_expires_at = ?3 \
         WHERE id IN (SELECT task_id FROM runs WHERE id IN (SELECT value FROM json_each(?1))) \
           AND current_run_id IN (SELECT value FROM json_each(?1)) \
           AND status = 'running' AND lease_owner = ?2 \
         RETURNING CASE WHEN cancel_requested THEN current_run_id END",
    )
    .bind(ids)
    .bind(node)
    .bind(ms(lease_until))
    .fetch_all(&store.writer)
    .await?;
    Ok(cancelled.into_iter().flatten().collect())
}

pub(super) async fn expired_runs(
    store: &SqliteStore,
    now: DateTime<Utc>,
    node: Option<&str>,
) -> StoreResult<Vec<(Task, i64)>> {
    let mut conn = store.reader.acquire().await?;
    let rows = match node {
        Some(node) => {
            sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE status = 'running' AND lease_owner = ?1 ORDER BY id"
            ))
            .bind(node)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE status = 'running' AND lease_expires_at < ?1 ORDER BY id"
            ))
            .bind(ms(now))
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut tasks = rows
        .iter()
        .map(task_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    load_children(&mut conn, &mut tasks, false).await?;
    Ok(tasks
        .into_iter()
        .filter_map(|task| task.current_run_id.map(|run_id| (task, run_id)))
        .collect())
}

/// The executor's writes of many runs in one transaction: one fsync for all
/// (see [`super::writes`]).
pub(super) async fn apply_writes(
    store: &SqliteStore,
    ops: &[WriteOp],
) -> StoreResult<Vec<WriteAnswer>> {
    Ok(super::turn::write_then_claim(store, ops, None).await?.0)
}

pub(super) async fn finish_run(
    store: &SqliteStore,
    task_id: i64,
    run_id: i64,
    end: &RunEnd,
) -> StoreResult<bool> {
    let op = WriteOp::FinishRun {
        task_id,
        run_id,
        end: end.clone(),
        claimed_version: None,
    };
    Ok(apply_writes(store, &[op]).await?[0].applied())
}

pub(super) async fn list_runs(
    store: &SqliteStore,
    task_id: i64,
    limit: i64,
) -> StoreResult<Vec<Run>> {
    let mut conn = store.reader.acquire().await?;
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2"
    ))
    .bind(task_id)
    .bind(limit.max(0))
    .fetch_all(&mut *conn)
    .await?;
    let mut runs = rows
        .iter()
        .map(run_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    load_step_runs(&mut conn, &mut runs).await?;
    Ok(runs)
}

pub(super) async fn recent_run_durations(
    store: &SqliteStore,
    task_id: i64,
    limit: i64,
) -> StoreResult<Vec<f64>> {
    let mut conn = store.reader.acquire().await?;
    let mut durations = run_durations(&mut conn, &[task_id], limit).await?;
    Ok(durations.remove(&task_id).unwrap_or_default())
}

/// Durations in seconds of each task's last `limit` completed runs, newest
/// first (one index walk per task, stopping after `limit`).
pub(super) async fn run_durations(
    conn: &mut SqliteConnection,
    task_ids: &[i64],
    limit: i64,
) -> StoreResult<HashMap<i64, Vec<f64>>> {
    let rows: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT r.task_id, (r.finished_at - r.started_at) / 1000.0 FROM json_each(?1) AS j \
         JOIN runs AS r ON r.id IN (SELECT id FROM runs WHERE task_id = j.value AND status = 'completed' \
                                    AND finished_at IS NOT NULL ORDER BY id DESC LIMIT ?2) \
         ORDER BY r.task_id, r.id DESC",
    )
    .bind(json_ids(task_ids.iter().copied()))
    .bind(limit.max(0))
    .fetch_all(&mut *conn)
    .await?;
    let mut durations: HashMap<i64, Vec<f64>> = HashMap::new();
    for (task_id, seconds) in rows {
        durations.entry(task_id).or_default().push(seconds);
    }
    Ok(durations)
}
