//! Tasks as users see them: create (or replace by code), read, list, patch,
//! delete, cleanup and counts.

use super::hot_request::hot_request;
use super::rows::{json_text, load_task, ms, opt_ms, parse, task_columns, task_from_row, time};
use super::{SqliteStore, create_batch};
use crate::store::ScheduleRow;
use crate::store::{
    NewStep, NewTask, SealedSecret, Step, StoreError, StoreResult, Task, TaskFilter, TaskPatch,
    TaskStatus,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

/// Statuses `delete_finished_tasks` removes when no status is given.
const FINISHED: [TaskStatus; 3] = [
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

fn not_found(id: i64) -> StoreError {
    StoreError::NotFound(format!("task {id}"))
}

/// The status of a task, read inside the write transaction that acts on it.
pub(super) async fn status_of(conn: &mut SqliteConnection, id: i64) -> StoreResult<TaskStatus> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(parse(&status.ok_or_else(|| not_found(id))?)?)
}

pub(super) async fn reload(conn: &mut SqliteConnection, id: i64) -> StoreResult<Task> {
    load_task(conn, id).await?.ok_or_else(|| not_found(id))
}

pub(super) async fn create(
    store: &SqliteStore,
    new: NewTask,
    now: DateTime<Utc>,
) -> StoreResult<(Task, bool)> {
    let mut tx = store.writer.begin().await?;
    let created = create_in(&mut tx, new, now).await?;
    tx.commit().await?;
    Ok(created)
}

/// Several creates in one transaction (one commit). A conflict (a running
/// task's code) fails only its own item: it is detected before any write.
/// Creates without a code (no upsert to decide) are inserted set-based.
/// `deferred`: plain creates may commit without an fsync (see
/// `Store::create_tasks_deferred`); creates with a code or secrets are
/// always synced.
pub(super) async fn create_many(
    store: &SqliteStore,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
    deferred: bool,
) -> StoreResult<Vec<StoreResult<(Task, bool)>>> {
    if create_batch::plain(&tasks) {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let created = hot_request(store, deferred, "creating tasks", move |tx, moves| {
            create_batch::insert_plain_in(tx, tasks, now, moves)
        })
        .await??;
        return Ok(created.into_iter().map(|task| Ok((task, true))).collect());
    }
    let mut tx = store.writer.begin().await?;
    let mut results: Vec<Option<StoreResult<(Task, bool)>>> = Vec::with_capacity(tasks.len());
    let mut plain = Vec::new();
    for new in tasks {
        if new.code.is_some() {
            match create_in(&mut tx, new, now).await {
                Err(StoreError::Conflict(message)) => {
                    results.push(Some(Err(StoreError::Conflict(message))))
                }
                Err(other) => return Err(other),
                Ok(created) => results.push(Some(Ok(created))),
            }
        } else {
            results.push(None);
            plain.push(new);
        }
    }
    let mut inserted = create_batch::insert_new(&mut tx, plain, now)
        .await?
        .into_iter();
    tx.commit().await?;
    Ok(results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| Ok((inserted.next().expect("one per plain create"), true)))
        })
        .collect())
}

/// A new task's status and first due time.
pub(super) fn initial_state(
    new: &NewTask,
    now: DateTime<Utc>,
) -> (TaskStatus, Option<DateTime<Utc>>) {
    if new.disabled {
        (TaskStatus::Disabled, None)
    } else {
        let due = crate::schedule::first_due(new.cron.as_deref(), &new.timezone, new.start_at, now);
        (
            TaskStatus::Scheduled,
            Some(due.unwrap_or(new.start_at.unwrap_or(now))),
        )
    }
}

pub(super) async fn create_in(
    tx: &mut SqliteConnection,
    new: NewTask,
    now: DateTime<Utc>,
) -> StoreResult<(Task, bool)> {
    let (initial, next_run_at) = initial_state(&new, now);

    let existing: Option<(i64, String)> = match &new.code {
        Some(code) => {
            sqlx::query_as("SELECT id, status FROM tasks WHERE code = ?1")
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    let (id, created) = match existing {
        Some((_, status)) if status == TaskStatus::Running.as_str() => {
            let code = new.code.as_deref().unwrap_or_default();
            return Err(StoreError::Conflict(format!(
                "task `{code}` is running; try again when it finishes"
            )));
        }
        Some((id, _)) => {
            // Replace the definition; runs (and step runs, which keep copies of
            // controller and sort order) stay as history.
            sqlx::query(
                "UPDATE tasks SET name = ?2, priority = ?3, start_at = ?4, run_interval = ?5, \
                        max_execution_time = ?6, max_attempts = ?7, status = ?8, next_run_at = ?9, \
                        attempts = 0, progress = 0, resume_from_run_id = NULL, pending_trigger = NULL, \
                        pending_step_id = NULL, cancel_requested = 0, updated_at = ?10, \
                        cron = ?11, timezone = ?12, hook_url = ?13, max_starts_per_minute = ?14 \
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(&new.name)
            .bind(new.priority.rank())
            .bind(opt_ms(new.start_at))
            .bind(new.run_interval)
            .bind(new.max_execution_time)
            .bind(new.max_attempts)
            .bind(initial.as_str())
            .bind(opt_ms(next_run_at))
            .bind(ms(now))
            .bind(&new.cron)
            .bind(&new.timezone)
            .bind(&new.hook_url)
            .bind(new.max_starts_per_minute)
            .execute(&mut *tx)
            .await?;
            let mut replaced = vec!["steps", "task_details"];
            if !new.keep_secrets {
                replaced.push("task_secrets");
            }
            for table in replaced {
                sqlx::query(&format!("DELETE FROM {table} WHERE task_id = ?1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            (id, false)
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO tasks (name, code, status, priority, start_at, run_interval, \
                        max_execution_time, max_attempts, next_run_at, created_by, created_at, updated_at, \
                        cron, timezone, hook_url, max_starts_per_minute) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15) RETURNING id",
            )
            .bind(&new.name)
            .bind(&new.code)
            .bind(initial.as_str())
            .bind(new.priority.rank())
            .bind(opt_ms(new.start_at))
            .bind(new.run_interval)
            .bind(new.max_execution_time)
            .bind(new.max_attempts)
            .bind(opt_ms(next_run_at))
            .bind(&new.created_by)
            .bind(ms(now))
            .bind(&new.cron)
            .bind(&new.timezone)
            .bind(&new.hook_url)
            .bind(new.max_starts_per_minute)
            .fetch_one(&mut *tx)
            .await?;
            (id, true)
        }
    };
    let step_ids = insert_children(tx, id, &new, created || !new.keep_secrets).await?;
    if !created {
        // A replaced task keeps fields (history, last result) the request does not carry.
        return Ok((reload(tx, id).await?, false));
    }
    // A new task is exactly what was inserted: build it instead of reading it back.
    Ok((built(id, new, step_ids, initial, next_run_at, now), true))
}

/// The task a create inserted, built from the request instead of read back.
pub(super) fn built(
    id: i64,
    new: NewTask,
    step_ids: Vec<i64>,
    initial: TaskStatus,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Task {
    let at = time(ms(now));
    let mut steps: Vec<Step> = new
        .steps
        .iter()
        .zip(step_ids)
        .map(|(step, step_id)| Step {
            id: step_id,
            task_id: id,
            sort_order: step.sort_order,
            controller: step.controller.clone(),
            settings: step.settings.clone(),
            max_execution_time: step.max_execution_time,
            max_memory: step.max_memory,
            interrupt_on_step_fault: step.interrupt_on_step_fault,
            status: step.status,
        })
        .collect();
    steps.sort_by_key(|s| (s.sort_order, s.id));
    let mut secret_names: Vec<String> = new.secrets.iter().map(|s| s.name.clone()).collect();
    secret_names.sort();
    Task {
        id,
        name: new.name,
        code: new.code,
        status: initial,
        priority: new.priority,
        start_at: new.start_at.map(|t| time(ms(t))),
        run_interval: new.run_interval,
        cron: new.cron,
        timezone: new.timezone,
        max_execution_time: new.max_execution_time,
        max_attempts: new.max_attempts,
        attempts: 0,
        progress: 0.0,
        message: None,
        last_result: None,
        last_run_at: None,
        next_run_at: next_run_at.map(|t| time(ms(t))),
        created_by: new.created_by,
        hook_url: new.hook_url,
        max_starts_per_minute: new.max_starts_per_minute,
        details: new.details,
        secret_names,
        current_run_id: None,
        created_at: at,
        updated_at: at,
        steps,
        next_runs: Vec::new(),
    }
}

/// Steps, details and (with `secrets`) secrets of a new or replaced task.
/// Returns the new steps' ids, in the order of `new.steps`.
async fn insert_children(
    conn: &mut SqliteConnection,
    id: i64,
    new: &NewTask,
    secrets: bool,
) -> StoreResult<Vec<i64>> {
    let mut step_ids = Vec::with_capacity(new.steps.len());
    for step in &new.steps {
        step_ids.push(insert_step(conn, id, step).await?);
    }
    for (key, value) in &new.details {
        upsert_detail(conn, id, key, value).await?;
    }
    if secrets {
        for secret in &new.secrets {
            insert_secret(conn, id, secret).await?;
        }
    }
    Ok(step_ids)
}

/// Insert one step of a task; returns its id.
pub(super) async fn insert_step(
    conn: &mut SqliteConnection,
    task_id: i64,
    step: &NewStep,
) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO steps (task_id, sort_order, controller, settings, max_execution_time, \
                max_memory, interrupt_on_step_fault, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
    )
    .bind(task_id)
    .bind(step.sort_order)
    .bind(&step.controller)
    .bind(json_text(&step.settings))
    .bind(step.max_execution_time)
    .bind(step.max_memory)
    .bind(step.interrupt_on_step_fault)
    .bind(step.status.as_str())
    .fetch_one(&mut *conn)
    .await?)
}

/// Add a secret, or replace the task's secret of that name.
pub(super) async fn insert_secret(
    conn: &mut SqliteConnection,
    task_id: i64,
    secret: &SealedSecret,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO task_secrets (task_id, name, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (task_id, name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
    )
    .bind(task_id)
    .bind(&secret.name)
    .bind(&secret.nonce)
    .bind(&secret.ciphertext)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_detail(
    conn: &mut SqliteConnection,
    id: i64,
    key: &str,
    value: &serde_json::Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO task_details (task_id, key, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(id)
    .bind(key)
    .bind(json_text(value))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn get(store: &SqliteStore, id: i64) -> StoreResult<Option<Task>> {
    let mut conn = store.reader.acquire().await?;
    Ok(load_task(&mut conn, id).await?)
}

pub(super) async fn list(store: &SqliteStore, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
    // Only the filters in use go into the SQL, so each shape gets its own
    // (cached) plan and can use its index.
    let mut sql = String::from(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE 1 = 1"
    ));
    if filter.status.is_some() {
        sql.push_str(" AND status = ?1");
    }
    if filter.code.is_some() {
        sql.push_str(" AND code = ?2");
    }
    if filter.module.is_some() {
        sql.push_str(" AND id IN (SELECT task_id FROM steps WHERE controller = ?3)");
    }
    if filter.before_id.is_some() {
        sql.push_str(" AND id < ?4");
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?5");
    let mut conn = store.reader.acquire().await?;
    let rows = sqlx::query(&sql)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.code)
        .bind(&filter.module)
        .bind(filter.before_id)
        .bind(filter.limit.max(0))
        .fetch_all(&mut *conn)
        .await?;
    let mut tasks = rows
        .iter()
        .map(task_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    super::rows::load_children(&mut conn, &mut tasks, false).await?;
    Ok(tasks)
}

pub(super) async fn update(
    store: &SqliteStore,
    id: i64,
    patch: &TaskPatch,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = store.writer.begin().await?;
    let row = sqlx::query(
        "SELECT status, start_at, next_run_at, cron, timezone, \
                pending_trigger IS NULL AND resume_from_run_id IS NULL AS on_schedule \
         FROM tasks WHERE id = ?1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| not_found(id))?;
    let row = ScheduleRow {
        status: parse(row.try_get("status")?)?,
        start_at: row.try_get("start_at")?,
        next_run_at: row.try_get("next_run_at")?,
        cron: row.try_get("cron")?,
        timezone: row.try_get("timezone")?,
        on_schedule: row.try_get("on_schedule")?,
    };
    let patched = super::super::patch_schedule(id, row, patch, now)?;
    sqlx::query(
        "UPDATE tasks SET name = COALESCE(?2, name), priority = COALESCE(?3, priority), start_at = ?4, \
                run_interval = COALESCE(?5, run_interval), \
                max_execution_time = COALESCE(?6, max_execution_time), \
                max_attempts = COALESCE(?7, max_attempts), status = ?8, next_run_at = ?9, \
                pending_trigger = CASE WHEN ?8 = 'disabled' THEN NULL ELSE pending_trigger END, \
                pending_step_id = CASE WHEN ?8 = 'disabled' THEN NULL ELSE pending_step_id END, \
                updated_at = ?10, cron = ?11, timezone = ?12, \
                hook_url = CASE WHEN ?13 THEN ?14 ELSE hook_url END, \
                max_starts_per_minute = CASE WHEN ?15 THEN ?16 ELSE max_starts_per_minute END \
         WHERE id = ?1",
    )
    .bind(id)
    .bind(&patch.name)
    .bind(patch.priority.map(|p| p.rank()))
    .bind(patched.start_at)
    .bind(patch.run_interval)
    .bind(patch.max_execution_time)
    .bind(patch.max_attempts)
    .bind(patched.status.as_str())
    .bind(patched.next_run_at)
    .bind(ms(now))
    .bind(&patched.cron)
    .bind(&patched.timezone)
    .bind(patch.hook_url.is_some())
    .bind(patch.hook_url.clone().flatten())
    .bind(patch.max_starts_per_minute.is_some())
    .bind(patch.max_starts_per_minute.flatten())
    .execute(&mut *tx)
    .await?;
    for (key, value) in patch.details.iter().flatten() {
        if value.is_null() {
            sqlx::query("DELETE FROM task_details WHERE task_id = ?1 AND key = ?2")
                .bind(id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        } else {
            upsert_detail(&mut tx, id, key, value).await?;
        }
    }
    for name in &patch.remove_secrets {
        sqlx::query("DELETE FROM task_secrets WHERE task_id = ?1 AND name = ?2")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    for secret in &patch.set_secrets {
        insert_secret(&mut tx, id, secret).await?;
    }
    for (step_id, step_status) in &patch.step_status {
        let changed = sqlx::query("UPDATE steps SET status = ?3 WHERE id = ?1 AND task_id = ?2")
            .bind(step_id)
            .bind(id)
            .bind(step_status.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("step {step_id} of task {id}")));
        }
    }
    let task = reload(&mut tx, id).await?;
    tx.commit().await?;
    Ok(task)
}

pub(super) async fn delete(store: &SqliteStore, id: i64) -> StoreResult<()> {
    let mut tx = store.writer.begin().await?;
    if status_of(&mut tx, id).await? == TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is running; cancel it or wait until it finishes before deleting it"
        )));
    }
    sqlx::query("DELETE FROM tasks WHERE id = ?1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn delete_finished(
    store: &SqliteStore,
    finished_before: DateTime<Utc>,
    status: Option<TaskStatus>,
) -> StoreResult<u64> {
    let statuses: Vec<&str> = match status {
        Some(TaskStatus::Running) => {
            return Err(StoreError::Conflict(
                "running tasks cannot be cleaned up; cancel them first".to_string(),
            ));
        }
        Some(status) => vec![status.as_str()],
        None => FINISHED.iter().map(|s| s.as_str()).collect(),
    };
    // Batched: deleting a task cascades to its runs, step runs and events.
    let statuses = serde_json::to_string(&statuses).context("encoding statuses")?;
    super::records::delete_in_batches(
        store,
        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
             WHERE status IN (SELECT value FROM json_each(?3)) AND updated_at < ?1 LIMIT ?2)",
        ms(finished_before),
        Some(&statuses),
    )
    .await
}
