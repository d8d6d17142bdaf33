//! A task's steps edited without re-posting the task (see SQLite's
//! `steps.rs`). The task row is locked first, so an edit and a claim of the
//! task (which reads the steps in its own transaction, passing over locked
//! tasks) never interleave: a run is claimed with the steps before the edit
//! or after it, whole.

use super::PostgresStore;
use super::rows::ms;
use super::tasks::reload;
use crate::store::{NewStep, StepChanges, StepEdit, StoreError, StoreResult, Task};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

pub(super) async fn edit(
    store: &PostgresStore,
    task_id: i64,
    edit: &StepEdit,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = store.pool.begin().await?;
    let result = edit_in(&mut tx, task_id, edit, now).await;
    super::settle(tx, result).await
}

async fn edit_in(
    tx: &mut PgConnection,
    task_id: i64,
    edit: &StepEdit,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let pending_step: Option<Option<i64>> =
        sqlx::query_scalar("SELECT pending_step_id FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
    let pending_step =
        pending_step.ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    let step_ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM steps WHERE task_id = $1 ORDER BY sort_order, id")
            .bind(task_id)
            .fetch_all(&mut *tx)
            .await?;
    super::super::check_step_edit(task_id, edit, &step_ids, pending_step)?;
    match edit {
        StepEdit::Add(step) => add(tx, task_id, step).await?,
        StepEdit::Change { step_id, changes } => {
            change(tx, *step_id, changes, now).await?;
            if changes.changes_the_work() {
                sqlx::query("DELETE FROM checkpoints WHERE task_id = $1 AND step_id = $2")
                    .bind(task_id)
                    .bind(step_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        StepEdit::Remove { step_id } => {
            sqlx::query("DELETE FROM steps WHERE id = $1")
                .bind(step_id)
                .execute(&mut *tx)
                .await?;
        }
        StepEdit::Reorder(order) => {
            sqlx::query(
                "UPDATE steps AS s SET sort_order = u.position \
                 FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, position) WHERE s.id = u.id",
            )
            .bind(order)
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query("UPDATE tasks SET updated_at = $2 WHERE id = $1")
        .bind(task_id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    reload(tx, task_id).await
}

async fn add(conn: &mut PgConnection, task_id: i64, step: &NewStep) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO steps (task_id, sort_order, controller, settings, max_execution_time, \
                max_memory, interrupt_on_step_fault, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(task_id)
    .bind(step.sort_order)
    .bind(&step.controller)
    .bind(step.settings.to_string())
    .bind(step.max_execution_time)
    .bind(step.max_memory)
    .bind(step.interrupt_on_step_fault)
    .bind(step.status.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn change(
    conn: &mut PgConnection,
    step_id: i64,
    changes: &StepChanges,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE steps SET sort_order = COALESCE($2, sort_order), \
                controller = COALESCE($3, controller), settings = COALESCE($4, settings), \
                max_execution_time = COALESCE($5, max_execution_time), \
                max_memory = CASE WHEN $6 THEN $7 ELSE max_memory END, \
                interrupt_on_step_fault = COALESCE($8, interrupt_on_step_fault), \
                status = COALESCE($9, status), \
                edited_at = CASE WHEN $10 THEN $11 ELSE edited_at END \
         WHERE id = $1",
    )
    .bind(step_id)
    .bind(changes.sort_order)
    .bind(&changes.controller)
    .bind(changes.settings.as_ref().map(|s| s.to_string()))
    .bind(changes.max_execution_time)
    .bind(changes.max_memory.is_some())
    .bind(changes.max_memory.flatten())
    .bind(changes.interrupt_on_step_fault)
    .bind(changes.status.map(|s| s.as_str()))
    .bind(changes.changes_the_work())
    .bind(ms(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
