//! A task's steps edited without re-posting the task: add, change, remove,
//! reorder. A running run is not touched: its executor holds the steps it
//! was claimed with (see [`crate::store::ClaimedRun`]), so an edit while it
//! runs changes the runs after it. A change to what a step does (module,
//! settings, limits) marks it edited, so that a retry runs it again instead
//! of reusing its old result, and drops its checkpoint.

use super::SqliteStore;
use super::rows::{json_text, ms};
use super::tasks::{insert_step, reload};
use crate::store::{StepChanges, StepEdit, StoreError, StoreResult, Task};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;

pub(super) async fn edit(
    store: &SqliteStore,
    task_id: i64,
    edit: &StepEdit,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = store.writer.begin().await?;
    let pending_step: Option<Option<i64>> =
        sqlx::query_scalar("SELECT pending_step_id FROM tasks WHERE id = ?1")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
    let pending_step =
        pending_step.ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    let step_ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM steps WHERE task_id = ?1 ORDER BY sort_order, id")
            .bind(task_id)
            .fetch_all(&mut *tx)
            .await?;
    super::super::check_step_edit(task_id, edit, &step_ids, pending_step)?;
    match edit {
        StepEdit::Add(step) => {
            insert_step(&mut tx, task_id, step).await?;
        }
        StepEdit::Change { step_id, changes } => {
            change(&mut tx, *step_id, changes, now).await?;
            if changes.changes_the_work() {
                sqlx::query("DELETE FROM checkpoints WHERE task_id = ?1 AND step_id = ?2")
                    .bind(task_id)
                    .bind(step_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        StepEdit::Remove { step_id } => {
            sqlx::query("DELETE FROM steps WHERE id = ?1")
                .bind(step_id)
                .execute(&mut *tx)
                .await?;
        }
        StepEdit::Reorder(order) => {
            for (position, step_id) in (1..).zip(order) {
                sqlx::query("UPDATE steps SET sort_order = ?2 WHERE id = ?1")
                    .bind(step_id)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    sqlx::query("UPDATE tasks SET updated_at = ?2 WHERE id = ?1")
        .bind(task_id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    let task = reload(&mut tx, task_id).await?;
    tx.commit().await?;
    Ok(task)
}

async fn change(
    conn: &mut SqliteConnection,
    step_id: i64,
    changes: &StepChanges,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE steps SET sort_order = COALESCE(?2, sort_order), \
                controller = COALESCE(?3, controller), settings = COALESCE(?4, settings), \
                max_execution_time = COALESCE(?5, max_execution_time), \
                max_memory = CASE WHEN ?6 THEN ?7 ELSE max_memory END, \
                interrupt_on_step_fault = COALESCE(?8, interrupt_on_step_fault), \
                status = COALESCE(?9, status), \
                edited_at = CASE WHEN ?10 THEN ?11 ELSE edited_at END \
         WHERE id = ?1",
    )
    .bind(step_id)
    .bind(changes.sort_order)
    .bind(&changes.controller)
    .bind(changes.settings.as_ref().map(json_text))
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
