//! What users do to a task besides editing it: run it now (whole or one
//! step), make every scheduled task due now, retry it (continuing its last
//! run), cancel it. Each locks the task row first (`FOR UPDATE`): a claim on another node either took it before
//! (the task is then running) or skips it until this commits.

use super::PostgresStore;
use super::rows::ms;
use super::tasks::{lock_status, reload};
use crate::store::{StepStatus, StoreError, StoreResult, Task, TaskStatus};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

pub(super) async fn run_now(
    store: &PostgresStore,
    id: i64,
    only_step: Option<i64>,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = store.pool.begin().await?;
    let result = run_now_in(&mut tx, id, only_step, now).await;
    super::settle(tx, result).await
}

async fn run_now_in(
    tx: &mut PgConnection,
    id: i64,
    only_step: Option<i64>,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    if lock_status(tx, id).await? == TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is already running"
        )));
    }
    if let Some(step_id) = only_step {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM steps WHERE id = $1 AND task_id = $2")
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
        "UPDATE tasks SET status = 'scheduled', next_run_at = $2, pending_trigger = $3, pending_step_id = $4, \
                attempts = 0, resume_from_run_id = NULL, cancel_requested = FALSE, updated_at = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(ms(now))
    .bind(trigger)
    .bind(only_step)
    .execute(&mut *tx)
    .await?;
    let task = reload(tx, id).await?;
    Ok(task)
}

/// One statement, no lock taken first: a row a claim on another node holds
/// is waited for, then left alone if it is no longer scheduled (read
/// committed checks the `WHERE` again). The count reads the snapshot before
/// the update, so the tasks brought forward and those already due are apart.
pub(super) async fn make_scheduled_due(
    store: &PostgresStore,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let due: i64 = sqlx::query_scalar(
        "WITH brought AS ( \
             UPDATE tasks SET next_run_at = $1, updated_at = $1 \
             WHERE status = 'scheduled' AND (next_run_at IS NULL OR next_run_at > $1) \
             RETURNING id) \
         SELECT (SELECT count(*) FROM brought) \
              + (SELECT count(*) FROM tasks WHERE status = 'scheduled' AND next_run_at <= $1)",
    )
    .bind(ms(now))
    .fetch_one(&store.pool)
    .await?;
    Ok(u64::try_from(due).unwrap_or(0))
}

pub(super) async fn retry(store: &PostgresStore, id: i64, now: DateTime<Utc>) -> StoreResult<Task> {
    let mut tx = store.pool.begin().await?;
    let result = retry_in(&mut tx, id, now).await;
    super::settle(tx, result).await
}

async fn retry_in(tx: &mut PgConnection, id: i64, now: DateTime<Utc>) -> StoreResult<Task> {
    if lock_status(tx, id).await? == TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is already running"
        )));
    }
    let last_run: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM runs WHERE task_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let Some(last_run) = last_run else {
        return Err(StoreError::Conflict(format!(
            "task {id} has not run yet, so there is nothing to retry; run it instead"
        )));
    };
    sqlx::query(
        "UPDATE tasks SET status = 'scheduled', next_run_at = $2, pending_trigger = 'retry', \
                pending_step_id = NULL, resume_from_run_id = $3, cancel_requested = FALSE, \
                updated_at = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(ms(now))
    .bind(last_run)
    .execute(&mut *tx)
    .await?;
    let task = reload(tx, id).await?;
    Ok(task)
}

pub(super) async fn request_cancel(
    store: &PostgresStore,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut tx = store.pool.begin().await?;
    let result = request_cancel_in(&mut tx, id, now).await;
    super::settle(tx, result).await
}

async fn request_cancel_in(
    tx: &mut PgConnection,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let running = lock_status(tx, id).await? == TaskStatus::Running;
    let sql = if running {
        // The executor (on whichever node) sees the flag at its next
        // heartbeat and stops the run.
        "UPDATE tasks SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1"
    } else {
        "UPDATE tasks SET status = 'cancelled', next_run_at = NULL, pending_trigger = NULL, \
                pending_step_id = NULL, resume_from_run_id = NULL, finished_at = $2, updated_at = $2 \
         WHERE id = $1"
    };
    sqlx::query(sql)
        .bind(id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    Ok(!running)
}
