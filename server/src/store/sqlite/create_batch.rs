//! New tasks (no code to upsert) inserted set-based: one statement each for
//! the tasks, their steps and their details, whatever the batch size. The
//! API group-commits concurrent creates into batches of hundreds; a loop of
//! per-task statements made every create a few round trips to the writer.
//!
//! Ids are assigned here, inside the write transaction (the only writer):
//! tasks and steps continue their `AUTOINCREMENT` sequences (inserting an id
//! above a sequence moves it up, so no id is handed out twice). That ties
//! each step and detail row to its task without reading ids back.

use super::rows::{json_text, ms, opt_ms};
use super::tasks::{built, initial_state, insert_secret};
use crate::store::{NewTask, StoreResult, Task};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnection;

pub(super) async fn insert_new(
    conn: &mut SqliteConnection,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Task>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let (first_task, first_step): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0) + 1, \
                COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'steps'), 0) + 1",
    )
    .fetch_one(&mut *conn)
    .await
    .context("reserving task and step ids")?;

    let mut task_rows = Vec::with_capacity(tasks.len());
    let mut step_rows = Vec::new();
    let mut detail_rows = Vec::new();
    let mut step_ids = Vec::with_capacity(tasks.len());
    let mut states = Vec::with_capacity(tasks.len());
    let mut next_step = first_step;
    for (id, new) in (first_task..).zip(&tasks) {
        let (initial, next_run_at) = initial_state(new, now);
        states.push((initial, next_run_at));
        task_rows.push(json!([
            id,
            new.name,
            initial.as_str(),
            new.priority.rank(),
            opt_ms(new.start_at),
            new.run_interval,
            new.max_execution_time,
            new.max_attempts,
            opt_ms(next_run_at),
            new.created_by,
            new.cron,
            new.timezone,
            new.hook_url,
            new.max_starts_per_minute,
        ]));
        let mut ids = Vec::with_capacity(new.steps.len());
        for step in &new.steps {
            step_rows.push(json!([
                next_step,
                id,
                step.sort_order,
                step.controller,
                json_text(&step.settings),
                step.max_execution_time,
                step.max_memory,
                step.interrupt_on_step_fault,
                step.status.as_str(),
            ]));
            ids.push(next_step);
            next_step += 1;
        }
        step_ids.push(ids);
        for (key, value) in &new.details {
            detail_rows.push(json!([id, key, json_text(value)]));
        }
    }

    sqlx::query(
        "INSERT INTO tasks (id, name, status, priority, start_at, run_interval, max_execution_time, \
                max_attempts, next_run_at, created_by, cron, timezone, hook_url, max_starts_per_minute, \
                created_at, updated_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
                value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
                value ->> 12, value ->> 13, ?2, ?2 FROM json_each(?1)",
    )
    .bind(Value::from(task_rows).to_string())
    .bind(ms(now))
    .execute(&mut *conn)
    .await
    .context("inserting tasks")?;
    if !step_rows.is_empty() {
        sqlx::query(
            "INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
                    max_memory, interrupt_on_step_fault, status) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
                    value ->> 6, value ->> 7, value ->> 8 FROM json_each(?1)",
        )
        .bind(Value::from(step_rows).to_string())
        .execute(&mut *conn)
        .await
        .context("inserting steps")?;
    }
    if !detail_rows.is_empty() {
        sqlx::query(
            "INSERT INTO task_details (task_id, key, value) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1)",
        )
        .bind(Value::from(detail_rows).to_string())
        .execute(&mut *conn)
        .await
        .context("inserting task details")?;
    }
    // Sealed secrets are binary and rare: one statement each.
    for (id, new) in (first_task..).zip(&tasks) {
        for secret in &new.secrets {
            insert_secret(conn, id, secret)
                .await
                .context("inserting task secrets")?;
        }
    }

    Ok((first_task..)
        .zip(tasks)
        .zip(step_ids)
        .zip(states)
        .map(|(((id, new), ids), (initial, next_run_at))| {
            built(id, new, ids, initial, next_run_at, now)
        })
        .collect())
}
