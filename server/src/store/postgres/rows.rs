//! Conversions between PostgreSQL rows and the model, and the batched
//! loaders that turn task rows into full [`Task`]s (steps, details, secret
//! names) with one query per child table, whatever the number of tasks
//! (ids travel as one `BIGINT[]`, matched with `= ANY($1)`).

use crate::store::{
    Priority, Run, RunResult, RunStatus, RunTrigger, SealedSecret, Step, StepRun, StepRunStatus,
    StepStatus, Task, TaskStatus,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::HashMap;
use std::str::FromStr;

/// Milliseconds since the epoch, the stored form of every time.
pub(super) fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(super) fn opt_ms(time: Option<DateTime<Utc>>) -> Option<i64> {
    time.map(ms)
}

pub(super) fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
}

/// A stored enum text back into its enum.
pub(super) fn parse<E: FromStr<Err = String>>(text: &str) -> Result<E> {
    text.parse().map_err(anyhow::Error::msg)
}

fn opt_parse<E: FromStr<Err = String>>(text: Option<String>) -> Result<Option<E>> {
    text.as_deref().map(parse).transpose()
}

pub(super) fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).context("stored JSON is malformed")
}

pub(super) fn opt_json(text: Option<String>) -> Result<Option<Value>> {
    text.as_deref().map(parse_json).transpose()
}

/// The columns [`task_from_row`] reads, for SELECT and RETURNING alike.
macro_rules! task_columns {
    () => {
        "id, name, code, status, priority, start_at, run_interval, max_execution_time, \
         max_attempts, attempts, progress, message, last_result, last_run_at, next_run_at, \
         created_by, current_run_id, created_at, updated_at, cron, timezone"
    };
}
pub(super) use task_columns;

/// A task row without its children (see [`load_children`]).
pub(super) fn task_from_row(row: &PgRow) -> Result<Task> {
    Ok(Task {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        code: row.try_get("code")?,
        status: parse::<TaskStatus>(row.try_get("status")?)?,
        priority: Priority::from_rank(row.try_get("priority")?),
        start_at: opt_time(row.try_get("start_at")?),
        run_interval: row.try_get("run_interval")?,
        cron: row.try_get("cron")?,
        timezone: row.try_get("timezone")?,
        max_execution_time: row.try_get("max_execution_time")?,
        max_attempts: row.try_get("max_attempts")?,
        attempts: row.try_get("attempts")?,
        progress: row.try_get("progress")?,
        message: row.try_get("message")?,
        last_result: opt_parse::<RunResult>(row.try_get("last_result")?)?,
        last_run_at: opt_time(row.try_get("last_run_at")?),
        next_run_at: opt_time(row.try_get("next_run_at")?),
        created_by: row.try_get("created_by")?,
        details: Map::new(),
        secret_names: Vec::new(),
        current_run_id: row.try_get("current_run_id")?,
        created_at: time(row.try_get("created_at")?),
        updated_at: time(row.try_get("updated_at")?),
        steps: Vec::new(),
        next_runs: Vec::new(),
    })
}

pub(super) const STEP_COLUMNS: &str = "id, task_id, sort_order, controller, settings, \
     max_execution_time, max_memory, interrupt_on_step_fault, status";

pub(super) fn step_from_row(row: &PgRow) -> Result<Step> {
    Ok(Step {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        sort_order: row.try_get("sort_order")?,
        controller: row.try_get("controller")?,
        settings: parse_json(row.try_get("settings")?)?,
        max_execution_time: row.try_get("max_execution_time")?,
        max_memory: row.try_get("max_memory")?,
        interrupt_on_step_fault: row.try_get("interrupt_on_step_fault")?,
        status: parse::<StepStatus>(row.try_get("status")?)?,
    })
}

pub(super) const RUN_COLUMNS: &str =
    "id, task_id, attempt, status, trigger, node, message, started_at, finished_at";

pub(super) fn run_from_row(row: &PgRow) -> Result<Run> {
    Ok(Run {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        attempt: row.try_get("attempt")?,
        status: parse::<RunStatus>(row.try_get("status")?)?,
        trigger: parse::<RunTrigger>(row.try_get("trigger")?)?,
        node: row.try_get("node")?,
        message: row.try_get("message")?,
        started_at: time(row.try_get("started_at")?),
        finished_at: opt_time(row.try_get("finished_at")?),
        steps: Vec::new(),
    })
}

fn step_run_from_row(row: &PgRow) -> Result<StepRun> {
    Ok(StepRun {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        sort_order: row.try_get("sort_order")?,
        controller: row.try_get("controller")?,
        status: parse::<StepRunStatus>(row.try_get("status")?)?,
        module_hash: row.try_get("module_hash")?,
        outcome: opt_json(row.try_get("outcome")?)?,
        result: opt_json(row.try_get("result")?)?,
        error: row.try_get("error")?,
        progress: row.try_get("progress")?,
        message: row.try_get("message")?,
        fuel_used: row.try_get("fuel_used")?,
        peak_memory: row.try_get("peak_memory")?,
        started_at: opt_time(row.try_get("started_at")?),
        finished_at: opt_time(row.try_get("finished_at")?),
    })
}

/// Fill in the steps, details and secret names of these tasks (3 queries).
/// With `sealed`, also return each task's sealed secrets (for a claim).
pub(super) async fn load_children(
    conn: &mut PgConnection,
    tasks: &mut [Task],
    sealed: bool,
) -> Result<HashMap<i64, Vec<SealedSecret>>> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let index: HashMap<i64, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();

    let rows = sqlx::query(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE task_id = ANY($1) ORDER BY task_id, sort_order, id"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading steps")?;
    for row in &rows {
        let step = step_from_row(row)?;
        tasks[index[&step.task_id]].steps.push(step);
    }

    let rows = sqlx::query(
        "SELECT task_id, key, value FROM task_details WHERE task_id = ANY($1) ORDER BY task_id, key",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading task details")?;
    for row in &rows {
        let task_id: i64 = row.try_get("task_id")?;
        let value = parse_json(row.try_get("value")?)?;
        tasks[index[&task_id]]
            .details
            .insert(row.try_get("key")?, value);
    }

    let sql = if sealed {
        "SELECT task_id, name, nonce, ciphertext FROM task_secrets \
         WHERE task_id = ANY($1) ORDER BY task_id, name"
    } else {
        "SELECT task_id, name FROM task_secrets WHERE task_id = ANY($1) ORDER BY task_id, name"
    };
    let rows = sqlx::query(sql)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .context("loading secrets")?;
    let mut secrets: HashMap<i64, Vec<SealedSecret>> = HashMap::new();
    for row in &rows {
        let task_id: i64 = row.try_get("task_id")?;
        let name: String = row.try_get("name")?;
        tasks[index[&task_id]].secret_names.push(name.clone());
        if sealed {
            secrets.entry(task_id).or_default().push(SealedSecret {
                name,
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
            });
        }
    }
    Ok(secrets)
}

/// Full tasks by id (result ordered as `ids`, missing ids left out).
pub(super) async fn load_tasks(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<Task>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading tasks")?;
    let mut by_id: HashMap<i64, Task> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let task = task_from_row(row)?;
        by_id.insert(task.id, task);
    }
    let mut tasks: Vec<Task> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
    load_children(conn, &mut tasks, false).await?;
    Ok(tasks)
}

pub(super) async fn load_task(conn: &mut PgConnection, id: i64) -> Result<Option<Task>> {
    Ok(load_tasks(conn, &[id]).await?.pop())
}

/// Fill in the step runs of these runs (one query), in step order.
pub(super) async fn load_step_runs(conn: &mut PgConnection, runs: &mut [Run]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let index: HashMap<i64, usize> = runs.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let rows = sqlx::query(
        "SELECT id, run_id, step_id, sort_order, controller, status, module_hash, outcome, result, \
                error, progress, message, fuel_used, peak_memory, started_at, finished_at \
         FROM step_runs WHERE run_id = ANY($1) ORDER BY run_id, sort_order, step_id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading step runs")?;
    for row in &rows {
        let step_run = step_run_from_row(row)?;
        runs[index[&step_run.run_id]].steps.push(step_run);
    }
    Ok(())
}
