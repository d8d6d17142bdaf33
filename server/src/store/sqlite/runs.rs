//! Runs after the claim: leases, step starts and ends, progress, the end of a
//! run, rescue queries and run history.

use super::SqliteStore;
use super::rows::{
    RUN_COLUMNS, json_ids, json_text, load_children, load_step_runs, ms, opt_ms, run_from_row,
    task_columns, task_from_row,
};
use crate::store::{Run, RunEnd, StepRunEnd, StoreError, StoreResult, Task, WriteOp};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

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
) -> StoreResult<()> {
    if run_ids.is_empty() {
        return Ok(());
    }
    let ids = json_ids(run_ids.iter().copied());
    sqlx::query(
        "UPDATE tasks SET lease_expires_at = ?3 \
         WHERE id IN (SELECT task_id FROM runs WHERE id IN (SELECT value FROM json_each(?1))) \
           AND current_run_id IN (SELECT value FROM json_each(?1)) \
           AND status = 'running' AND lease_owner = ?2",
    )
    .bind(ids)
    .bind(node)
    .bind(ms(lease_until))
    .execute(&store.writer)
    .await?;
    Ok(())
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

pub(super) async fn start_step(
    store: &SqliteStore,
    step_run_id: i64,
    module_hash: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut conn = store.writer.acquire().await?;
    if start_step_in(&mut conn, step_run_id, module_hash, now).await? {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("step run {step_run_id}")))
    }
}

/// Mark a pending step run as running; false when there is no such step run.
pub(super) async fn start_step_in(
    conn: &mut SqliteConnection,
    step_run_id: i64,
    module_hash: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // Only a pending step run starts: one already ended (rescued) stays ended.
    let exists: Option<String> = sqlx::query_scalar(
        "UPDATE step_runs SET status = CASE status WHEN 'pending' THEN 'running' ELSE status END, \
                module_hash = CASE status WHEN 'pending' THEN ?2 ELSE module_hash END, \
                started_at = CASE status WHEN 'pending' THEN ?3 ELSE started_at END \
         WHERE id = ?1 RETURNING status",
    )
    .bind(step_run_id)
    .bind(module_hash)
    .bind(ms(now))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(exists.is_some())
}

/// The executor's writes of many runs in one transaction: one fsync for all.
pub(super) async fn apply_writes(store: &SqliteStore, ops: &[WriteOp]) -> StoreResult<Vec<bool>> {
    let mut tx = store.writer.begin().await?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let applied = match op {
            WriteOp::StartStep {
                step_run_id,
                module_hash,
                at,
            } => {
                start_step_in(&mut tx, *step_run_id, module_hash.as_deref(), *at).await?;
                true
            }
            WriteOp::FinishStep { step_run_id, end } => {
                finish_step_in(&mut tx, *step_run_id, end).await?
            }
            WriteOp::FinishRun {
                task_id,
                run_id,
                end,
            } => finish_run_in(&mut tx, *task_id, *run_id, end).await?,
        };
        results.push(applied);
    }
    tx.commit().await?;
    Ok(results)
}

pub(super) async fn finish_step(
    store: &SqliteStore,
    step_run_id: i64,
    end: &StepRunEnd,
) -> StoreResult<bool> {
    let mut conn = store.writer.acquire().await?;
    finish_step_in(&mut conn, step_run_id, end).await
}

/// One statement, so a batched variant is a loop inside one transaction.
pub(super) async fn finish_step_in(
    conn: &mut SqliteConnection,
    step_run_id: i64,
    end: &StepRunEnd,
) -> StoreResult<bool> {
    let written = sqlx::query(
        "UPDATE step_runs SET status = ?2, outcome = ?3, result = ?4, error = ?5, progress = ?6, \
                message = ?7, fuel_used = ?8, peak_memory = ?9, finished_at = ?10 \
         WHERE id = ?1 AND status IN ('pending', 'running')",
    )
    .bind(step_run_id)
    .bind(end.status.as_str())
    .bind(json_text(&end.outcome))
    .bind(end.result.as_ref().map(json_text))
    .bind(&end.error)
    .bind(end.progress)
    .bind(&end.message)
    .bind(end.fuel_used)
    .bind(end.peak_memory)
    .bind(ms(end.finished_at))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(written == 1)
}

pub(super) async fn save_step_progress(
    store: &SqliteStore,
    run_id: i64,
    step_run_id: i64,
    step_progress: f64,
    task_progress: f64,
    message: Option<&str>,
) -> StoreResult<()> {
    let mut tx = store.writer.begin().await?;
    sqlx::query(
        "UPDATE step_runs SET progress = ?3, message = COALESCE(?4, message) \
         WHERE id = ?1 AND run_id = ?2 AND status = 'running'",
    )
    .bind(step_run_id)
    .bind(run_id)
    .bind(step_progress)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE tasks SET progress = ?2, message = COALESCE(?3, message) \
         WHERE id = (SELECT task_id FROM runs WHERE id = ?1) AND current_run_id = ?1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(task_progress)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn finish_run(
    store: &SqliteStore,
    task_id: i64,
    run_id: i64,
    end: &RunEnd,
) -> StoreResult<bool> {
    let mut tx = store.writer.begin().await?;
    let applied = finish_run_in(&mut tx, task_id, run_id, end).await?;
    if applied {
        tx.commit().await?;
    }
    Ok(applied)
}

/// Three statements, inside the caller's transaction (so a batched variant
/// is a loop inside one): the guarded task update, which decides; the run;
/// the step runs left pending or running.
pub(super) async fn finish_run_in(
    conn: &mut SqliteConnection,
    task_id: i64,
    run_id: i64,
    end: &RunEnd,
) -> StoreResult<bool> {
    let finished_at = ms(end.finished_at);
    let applied = sqlx::query(
        "UPDATE tasks SET status = ?3, last_result = ?4, next_run_at = ?5, attempts = ?6, progress = ?7, \
                message = COALESCE(?8, message), finished_at = ?9, updated_at = ?9, \
                resume_from_run_id = ?10, current_run_id = NULL, lease_owner = NULL, \
                lease_expires_at = NULL, cancel_requested = 0, pending_trigger = NULL, pending_step_id = NULL \
         WHERE id = ?1 AND current_run_id = ?2 AND status = 'running'",
    )
    .bind(task_id)
    .bind(run_id)
    .bind(end.task_status.as_str())
    .bind(end.last_result.as_str())
    .bind(opt_ms(end.next_run_at))
    .bind(end.attempts)
    .bind(end.progress)
    .bind(&end.message)
    .bind(finished_at)
    .bind(end.resume_next.then_some(run_id))
    .execute(&mut *conn)
    .await
    .context("ending the run's task")?
    .rows_affected();
    if applied == 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE runs SET status = ?2, message = ?3, finished_at = ?4 WHERE id = ?1")
        .bind(run_id)
        .bind(end.run_status.as_str())
        .bind(&end.message)
        .bind(finished_at)
        .execute(&mut *conn)
        .await
        .context("ending the run")?;
    sqlx::query(
        "UPDATE step_runs SET status = CASE status WHEN 'pending' THEN 'skipped' ELSE 'interrupted' END, \
                error = CASE status WHEN 'running' THEN 'interrupted: the run ended' ELSE error END, \
                finished_at = CASE status WHEN 'running' THEN ?2 ELSE finished_at END \
         WHERE run_id = ?1 AND status IN ('pending', 'running')",
    )
    .bind(run_id)
    .bind(finished_at)
    .execute(&mut *conn)
    .await
    .context("closing the run's step runs")?;
    Ok(true)
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
    let rows = sqlx::query(
        "SELECT (finished_at - started_at) / 1000.0 AS seconds FROM runs \
         WHERE task_id = ?1 AND status = 'completed' AND finished_at IS NOT NULL \
         ORDER BY id DESC LIMIT ?2",
    )
    .bind(task_id)
    .bind(limit.max(0))
    .fetch_all(&store.reader)
    .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("seconds"))
        .collect::<Result<_, _>>()?)
}
