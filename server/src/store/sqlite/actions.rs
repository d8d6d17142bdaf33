//! What users do to a task besides editing it: run it now (whole or one
//! step), make every scheduled task due now, retry it (continuing its last
//! run), cancel it.

use super::SqliteStore;
use super::rows::ms;
use super::tasks::{reload, status_of};
use crate::store::{StepStatus, StoreError, StoreResult, Task, TaskStatus};
use chrono::{DateTime, Utc};

pub(super) async fn run_now(
    store: &SqliteStore,
    id: i64,
    only_step: Option<i64>,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = store.writer.begin().await?;
    if status_of(&mut tx, id).await? == TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is already running"
        )));
    }
    if let Some(step_id) = only_step {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM steps WHERE id = ?1 AND task_id = ?2")
                .bind(step_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        match status {
            None => return Err(StoreError::NotFound(format!("step {step_id} of task {id}"))),
            Some(status) if status == StepStatus::Disabled.as_str() => {
                return Err(StoreError::Conflict(format!(
                    "step {step_id} of task {id} is disabled; enable it before running it"
                )));
            }
            Some(_) => {}
        }
    }
    let trigger = if only_step.is_some() {
        "step"
    } else {
        "manual"
    };
    sqlx::query(
        "UPDATE tasks SET status = 'scheduled', next_run_at = ?2, pending_trigger = ?3, pending_step_id = ?4, \
                attempts = 0, resume_from_run_id = NULL, cancel_requested = 0, updated_at = ?2 \
         WHERE id = ?1",
    )
    .bind(id)
    .bind(ms(now))
    .bind(trigger)
    .bind(only_step)
    .execute(&mut *tx)
    .await?;
    let task = reload(&mut tx, id).await?;
    tx.commit().await?;
    Ok(task)
}

pub(super) async fn make_scheduled_due(
    store: &SqliteStore,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut tx = store.writer.begin().await?;
    sqlx::query(
        "UPDATE tasks SET next_run_at = ?1, updated_at = ?1 \
         WHERE status = 'scheduled' AND (next_run_at IS NULL OR next_run_at > ?1)",
    )
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    let due: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE status = 'scheduled' AND next_run_at <= ?1",
    )
    .bind(ms(now))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(due).unwrap_or(0))
}

pub(super) async fn retry(store: &SqliteStore, id: i64, now: DateTime<Utc>) -> StoreResult<Task> {
    let mut tx = store.writer.begin().await?;
    if status_of(&mut tx, id).await? == TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is already running"
        )));
    }
    let last_run: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM runs WHERE task_id = ?1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let Some(last_run) = last_run else {
        return Err(StoreError::Conflict(format!(
            "task {id} has not run yet, so there is nothing to retry; run it instead"
        )));
    };
    sqlx::query(
        "UPDATE tasks SET status = 'scheduled', next_run_at = ?2, pending_trigger = 'retry', \
                pending_step_id = NULL, resume_from_run_id = ?3, cancel_requested = 0, \
                updated_at = ?2 \
         WHERE id = ?1",
    )
    .bind(id)
    .bind(ms(now))
    .bind(last_run)
    .execute(&mut *tx)
    .await?;
    let task = reload(&mut tx, id).await?;
    tx.commit().await?;
    Ok(task)
}

pub(super) async fn request_cancel(
    store: &SqliteStore,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut tx = store.writer.begin().await?;
    let running = status_of(&mut tx, id).await? == TaskStatus::Running;
    let sql = if running {
        // The executor sees the flag (cancel_requested) and stops the run.
        "UPDATE tasks SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1"
    } else {
        "UPDATE tasks SET status = 'cancelled', next_run_at = NULL, pending_trigger = NULL, \
                pending_step_id = NULL, resume_from_run_id = NULL, finished_at = ?2, updated_at = ?2 \
         WHERE id = ?1"
    };
    sqlx::query(sql)
        .bind(id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(!running)
}
