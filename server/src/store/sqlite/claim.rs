//! Claiming due tasks: one write transaction and a fixed handful of
//! statements per batch, whatever the batch size (ids travel as JSON arrays
//! through `json_each`, so every statement is prepared once and cached).
//!
//! 1. `UPDATE tasks … WHERE id IN (due tasks) RETURNING …` marks them running;
//! 2. `INSERT INTO runs … SELECT … FROM json_each(?) RETURNING id, task_id`;
//! 3. `UPDATE tasks SET current_run_id …` points each task at its run;
//! 4. steps, details and sealed secrets of all claimed tasks (3 queries);
//! 5. the reusable step runs of the runs being resumed (only if any);
//! 6. `INSERT INTO step_runs … SELECT … FROM json_each(?) RETURNING …`;
//! 7. checkpoints of the fresh (non-resuming) runs are cleared (only if any);
//! 8. the controllers' modules and the tasks' recent run durations, so the
//!    executor reads nothing per run.
//!
//! The transaction runs with `synchronous=NORMAL` (see [`super::relaxed`]).

use super::SqliteStore;
use super::relaxed::Relaxed;
use super::rows::{json_ids, load_children, ms, task_columns, task_from_row};
use super::runs::run_durations;
use crate::store::{
    ClaimedRun, ModuleRef, PlannedStep, Priority, RunTrigger, Step, StepRunStatus, StepStatus,
    StoreResult, Task,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The claim statement. The due tasks are picked by one index range scan per
/// priority (highest first), each stopping after `limit` rows, then merged:
/// a single `ORDER BY priority DESC, next_run_at` over all scheduled tasks
/// would instead walk through every not-yet-due task of a higher priority.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    let mut ranks: Vec<i64> = Priority::ALL.iter().map(|p| p.rank()).collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    let per_priority: Vec<String> = ranks
        .iter()
        .map(|rank| {
            format!(
                "SELECT * FROM (SELECT id, priority, next_run_at FROM tasks AS t \
                 WHERE status = 'scheduled' AND priority = {rank} AND next_run_at <= ?1 \
                   AND NOT EXISTS (SELECT 1 FROM steps AS s JOIN modules AS m ON m.path = s.controller \
                                   WHERE s.task_id = t.id AND s.status = 'scheduled' AND m.active = 0) \
                 ORDER BY next_run_at, id LIMIT ?2)"
            )
        })
        .collect();
    format!(
        "WITH due AS ({}) \
         UPDATE tasks SET status = 'running', attempts = attempts + 1, lease_owner = ?3, \
                lease_expires_at = ?4, last_run_at = ?1, updated_at = ?1, cancel_requested = 0, \
                progress = CASE WHEN resume_from_run_id IS NULL THEN 0 ELSE progress END, \
                message = CASE WHEN resume_from_run_id IS NULL THEN NULL ELSE message END \
         WHERE id IN (SELECT id FROM due ORDER BY priority DESC, next_run_at, id LIMIT ?2) \
         RETURNING {}, resume_from_run_id, pending_trigger, pending_step_id",
        per_priority.join(" UNION ALL "),
        task_columns!()
    )
});

/// Past runs whose durations a claim brings for the ETA.
const PAST_RUNS: i64 = 5;

/// What decides the shape of a claimed task's run (read from the task row).
struct Shape {
    resume_from: Option<i64>,
    pending_trigger: Option<String>,
    pending_step: Option<i64>,
}

impl Shape {
    fn trigger(&self) -> RunTrigger {
        if self.pending_step.is_some() {
            RunTrigger::Step
        } else if self.pending_trigger.as_deref() == Some(RunTrigger::Manual.as_str()) {
            RunTrigger::Manual
        } else if self.resume_from.is_some() {
            RunTrigger::Retry
        } else {
            RunTrigger::Schedule
        }
    }

    /// The run this one continues: not for a single-step run.
    fn resumes(&self) -> Option<i64> {
        self.resume_from.filter(|_| self.pending_step.is_none())
    }
}

/// A step run of the previous run that the new run reuses.
struct Reusable {
    result: Option<String>,
    outcome: Option<String>,
    module_hash: Option<String>,
    progress: f64,
    message: Option<String>,
}

pub(super) async fn claim_due(
    store: &SqliteStore,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<ClaimedRun>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut conn = Relaxed::acquire(store).await?;
    let claimed = claim_in(&mut conn, node, now, lease_until, limit).await;
    conn.restore().await?;
    claimed
}

async fn claim_in(
    conn: &mut SqliteConnection,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<ClaimedRun>> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let rows = sqlx::query(&CLAIM_SQL)
        .bind(ms(now))
        .bind(limit)
        .bind(node)
        .bind(ms(lease_until))
        .fetch_all(&mut *tx)
        .await
        .context("claiming due tasks")?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let mut claimed: Vec<(Task, Shape)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let shape = Shape {
            resume_from: row.try_get("resume_from_run_id")?,
            pending_trigger: row.try_get("pending_trigger")?,
            pending_step: row.try_get("pending_step_id")?,
        };
        claimed.push((task_from_row(row)?, shape));
    }
    // RETURNING order is unspecified: restore the claim order.
    claimed.sort_by_key(|(t, _)| (std::cmp::Reverse(t.priority.rank()), t.next_run_at, t.id));
    let (mut tasks, shapes): (Vec<Task>, Vec<Shape>) = claimed.into_iter().unzip();

    let run_ids = insert_runs(&mut tx, &tasks, &shapes, node, now).await?;
    sqlx::query(
        "UPDATE tasks SET current_run_id = (SELECT max(id) FROM runs WHERE runs.task_id = tasks.id), \
                pending_trigger = NULL, pending_step_id = NULL \
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_ids(tasks.iter().map(|t| t.id)))
    .execute(&mut *tx)
    .await
    .context("pointing tasks at their runs")?;
    for task in &mut tasks {
        task.current_run_id = Some(run_ids[&task.id]);
    }
    let mut secrets = load_children(&mut tx, &mut tasks, true).await?;

    let reusable = load_reusable(&mut tx, &shapes).await?;
    let mut planned = insert_step_runs(&mut tx, &tasks, &shapes, &run_ids, &reusable).await?;
    let modules = load_modules(&mut tx, &tasks).await?;
    for step in planned.iter_mut().flatten() {
        step.module = modules.get(&step.step.controller).cloned();
    }
    let claimed_ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let mut past = run_durations(&mut tx, &claimed_ids, PAST_RUNS).await?;

    // A resuming run continues the artifacts of the run it resumes (a dump
    // that stopped half-way is completed, not restarted in an empty file).
    let carried: Vec<(i64, i64)> = tasks
        .iter()
        .zip(&shapes)
        .filter_map(|(t, s)| s.resumes().map(|previous| (previous, run_ids[&t.id])))
        .collect();
    for (previous, run_id) in carried {
        sqlx::query(
            "INSERT INTO artifacts (task_id, run_id, step_id, name, data, size, created_at, updated_at) \
             SELECT task_id, ?2, step_id, name, data, size, created_at, updated_at FROM artifacts WHERE run_id = ?1",
        )
        .bind(previous)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .context("carrying artifacts into the resuming run")?;
    }

    let fresh: Vec<i64> = tasks
        .iter()
        .zip(&shapes)
        .filter(|(_, s)| s.resumes().is_none())
        .map(|(t, _)| t.id)
        .collect();
    if !fresh.is_empty() {
        sqlx::query("DELETE FROM checkpoints WHERE task_id IN (SELECT value FROM json_each(?1))")
            .bind(json_ids(fresh))
            .execute(&mut *tx)
            .await
            .context("clearing checkpoints of fresh runs")?;
    }
    tx.commit().await?;

    Ok(tasks
        .into_iter()
        .zip(shapes)
        .zip(planned)
        .map(|((task, shape), steps)| ClaimedRun {
            run_id: run_ids[&task.id],
            attempt: task.attempts,
            trigger: shape.trigger(),
            secrets: secrets.remove(&task.id).unwrap_or_default(),
            past_durations: past.remove(&task.id).unwrap_or_default(),
            steps,
            task,
        })
        .collect())
}

/// One run per claimed task; returns task id → run id.
async fn insert_runs(
    conn: &mut SqliteConnection,
    tasks: &[Task],
    shapes: &[Shape],
    node: &str,
    now: DateTime<Utc>,
) -> StoreResult<HashMap<i64, i64>> {
    let payload: Vec<Value> = tasks
        .iter()
        .zip(shapes)
        .map(|(task, shape)| json!([task.id, task.attempts, shape.trigger().as_str()]))
        .collect();
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO runs (task_id, attempt, status, trigger, node, started_at) \
         SELECT value ->> 0, value ->> 1, 'running', value ->> 2, ?2, ?3 FROM json_each(?1) \
         RETURNING task_id, id",
    )
    .bind(Value::from(payload).to_string())
    .bind(node)
    .bind(ms(now))
    .fetch_all(&mut *conn)
    .await
    .context("inserting runs")?;
    Ok(rows.into_iter().collect())
}

/// (previous run id, step id) → the step run to reuse, for resuming runs.
async fn load_reusable(
    conn: &mut SqliteConnection,
    shapes: &[Shape],
) -> StoreResult<HashMap<(i64, i64), Reusable>> {
    let previous: Vec<i64> = shapes.iter().filter_map(Shape::resumes).collect();
    if previous.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT run_id, step_id, result, outcome, module_hash, progress, message FROM step_runs \
         WHERE run_id IN (SELECT value FROM json_each(?1)) AND status IN ('completed', 'reused')",
    )
    .bind(json_ids(previous))
    .fetch_all(&mut *conn)
    .await
    .context("loading reusable step runs")?;
    let mut reusable = HashMap::with_capacity(rows.len());
    for row in &rows {
        reusable.insert(
            (row.try_get("run_id")?, row.try_get("step_id")?),
            Reusable {
                result: row.try_get("result")?,
                outcome: row.try_get("outcome")?,
                module_hash: row.try_get("module_hash")?,
                progress: row.try_get("progress")?,
                message: row.try_get("message")?,
            },
        );
    }
    Ok(reusable)
}

/// What each step of a claimed task does in its new run.
fn plan(shape: &Shape, step: &Step, reusable: &HashMap<(i64, i64), Reusable>) -> StepRunStatus {
    if step.status == StepStatus::Disabled {
        return StepRunStatus::Skipped;
    }
    if let Some(only) = shape.pending_step {
        return if only == step.id {
            StepRunStatus::Pending
        } else {
            StepRunStatus::Skipped
        };
    }
    match shape.resumes() {
        Some(previous) if reusable.contains_key(&(previous, step.id)) => StepRunStatus::Reused,
        _ => StepRunStatus::Pending,
    }
}

/// Insert the step runs of all claimed runs in one statement; returns each
/// task's planned steps, in claim order.
async fn insert_step_runs(
    conn: &mut SqliteConnection,
    tasks: &[Task],
    shapes: &[Shape],
    run_ids: &HashMap<i64, i64>,
    reusable: &HashMap<(i64, i64), Reusable>,
) -> StoreResult<Vec<Vec<PlannedStep>>> {
    let mut payload = Vec::new();
    let mut statuses = Vec::with_capacity(tasks.len());
    for (task, shape) in tasks.iter().zip(shapes) {
        let run_id = run_ids[&task.id];
        let mut of_task = Vec::with_capacity(task.steps.len());
        for step in &task.steps {
            let status = plan(shape, step, reusable);
            let copied = match (status, shape.resumes()) {
                (StepRunStatus::Reused, Some(previous)) => reusable.get(&(previous, step.id)),
                _ => None,
            };
            payload.push(json!([
                run_id,
                step.id,
                step.sort_order,
                step.controller,
                status.as_str(),
                copied.and_then(|r| r.result.as_deref()),
                copied.and_then(|r| r.outcome.as_deref()),
                copied.and_then(|r| r.module_hash.as_deref()),
                copied.map_or(0.0, |r| r.progress),
                copied.and_then(|r| r.message.as_deref()),
            ]));
            of_task.push(status);
        }
        statuses.push(of_task);
    }
    let rows: Vec<(i64, i64, i64)> = if payload.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, result, outcome, \
                    module_hash, progress, message) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
                    value ->> 6, value ->> 7, value ->> 8, value ->> 9 FROM json_each(?1) \
             RETURNING run_id, step_id, id",
        )
        .bind(Value::from(payload).to_string())
        .fetch_all(&mut *conn)
        .await
        .context("inserting step runs")?
    };
    let ids: HashMap<(i64, i64), i64> = rows
        .into_iter()
        .map(|(run, step, id)| ((run, step), id))
        .collect();
    Ok(tasks
        .iter()
        .zip(statuses)
        .map(|(task, statuses)| {
            let run_id = run_ids[&task.id];
            // Steps are loaded in (sort_order, id) order, the order they run in.
            task.steps
                .iter()
                .zip(statuses)
                .map(|(step, status)| PlannedStep {
                    step: step.clone(),
                    step_run_id: ids[&(run_id, step.id)],
                    status,
                    module: None,
                })
                .collect()
        })
        .collect())
}

/// The registered modules the claimed steps name (path → version).
async fn load_modules(
    conn: &mut SqliteConnection,
    tasks: &[Task],
) -> StoreResult<HashMap<String, ModuleRef>> {
    let mut paths: Vec<&str> = tasks
        .iter()
        .flat_map(|t| t.steps.iter().map(|s| s.controller.as_str()))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT path, hash, active FROM modules WHERE path IN (SELECT value FROM json_each(?1))",
    )
    .bind(Value::from(paths).to_string())
    .fetch_all(&mut *conn)
    .await
    .context("loading the claimed steps' modules")?;
    Ok(rows
        .into_iter()
        .map(|(path, hash, active)| (path, ModuleRef { hash, active }))
        .collect())
}
