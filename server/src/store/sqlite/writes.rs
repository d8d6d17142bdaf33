//! The executor's writes (step starts, step ends, run ends) applied set-based:
//! one statement per kind for a whole batch, whatever its size. Every sqlx
//! statement is a round trip to the connection's worker thread, so a loop of
//! per-run statements cost more than the SQL itself; here a batch of hundreds
//! of runs costs five statements and one commit.
//!
//! Order is kept where it matters: within one run, its step starts come before
//! its step ends, which come before its end. Applying all starts, then all
//! step ends, then all run ends keeps that order for every run of the batch,
//! and runs do not touch each other's rows.

use super::rows::{ms, opt_ms};
use crate::store::{RunEnd, StepRunEnd, StoreResult, WriteOp};
use anyhow::Context;
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnection;
use std::collections::{HashMap, HashSet};

/// Apply `ops` inside the caller's transaction; one `applied` answer per op,
/// as the single-op store methods give it (`StartStep` is always `true`).
pub(super) async fn apply(conn: &mut SqliteConnection, ops: &[WriteOp]) -> StoreResult<Vec<bool>> {
    // A step that starts and ends within one batch (most do) is written once:
    // its start rides on its end.
    let ending: HashSet<i64> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::FinishStep { step_run_id, .. } => Some(*step_run_id),
            _ => None,
        })
        .collect();
    let mut folded = HashMap::new();
    let mut starts = Vec::new();
    let mut step_ends = Vec::new();
    let mut run_ends = Vec::new();
    let mut run_of_task = HashMap::new();
    for op in ops {
        match op {
            WriteOp::StartStep {
                step_run_id,
                module_hash,
                at,
            } => {
                if ending.contains(step_run_id) {
                    folded.insert(*step_run_id, (module_hash.as_deref(), ms(*at)));
                } else {
                    starts.push(json!([step_run_id, module_hash, ms(*at)]));
                }
            }
            WriteOp::FinishStep { step_run_id, end } => {
                let start = folded.get(step_run_id).copied();
                step_ends.push(step_end_row(*step_run_id, end, start));
            }
            WriteOp::FinishRun {
                task_id,
                run_id,
                end,
            } => {
                run_of_task.insert(*task_id, *run_id);
                run_ends.push(run_end_row(*task_id, *run_id, end));
            }
        }
    }
    if !starts.is_empty() {
        start_steps(conn, starts).await?;
    }
    let steps_ended = if step_ends.is_empty() {
        HashSet::new()
    } else {
        end_steps(conn, step_ends).await?
    };
    let runs_ended: HashSet<i64> = if run_ends.is_empty() {
        HashSet::new()
    } else {
        end_runs(conn, run_ends)
            .await?
            .into_iter()
            .filter_map(|task_id| run_of_task.get(&task_id).copied())
            .collect()
    };
    Ok(ops
        .iter()
        .map(|op| match op {
            WriteOp::StartStep { .. } => true,
            WriteOp::FinishStep { step_run_id, .. } => steps_ended.contains(step_run_id),
            WriteOp::FinishRun { run_id, .. } => runs_ended.contains(run_id),
        })
        .collect())
}

/// Only a pending step run starts: one already ended (rescued) stays ended.
async fn start_steps(conn: &mut SqliteConnection, rows: Vec<Value>) -> StoreResult<()> {
    sqlx::query(
        "UPDATE step_runs SET status = 'running', module_hash = j.value ->> 1, started_at = j.value ->> 2 \
         FROM json_each(?1) AS j \
         WHERE step_runs.id = j.value ->> 0 AND step_runs.status = 'pending'",
    )
    .bind(Value::from(rows).to_string())
    .execute(&mut *conn)
    .await
    .context("starting step runs")?;
    Ok(())
}

/// `start`: the module hash and start time of a start folded into this end.
fn step_end_row(step_run_id: i64, end: &StepRunEnd, start: Option<(Option<&str>, i64)>) -> Value {
    json!([
        step_run_id,
        end.status.as_str(),
        end.outcome.to_string(),
        end.result.as_ref().map(Value::to_string),
        end.error,
        end.progress,
        end.message,
        end.fuel_used,
        end.peak_memory,
        ms(end.finished_at),
        start.and_then(|(hash, _)| hash),
        start.map(|(_, at)| at),
    ])
}

/// A step run ends once: only while pending or running. Returns the ended
/// ids. A folded start applies as a start would: only to a pending step run.
async fn end_steps(conn: &mut SqliteConnection, rows: Vec<Value>) -> StoreResult<HashSet<i64>> {
    let ended: Vec<i64> = sqlx::query_scalar(
        "UPDATE step_runs SET status = j.value ->> 1, outcome = j.value ->> 2, result = j.value ->> 3, \
                error = j.value ->> 4, progress = j.value ->> 5, message = j.value ->> 6, \
                fuel_used = j.value ->> 7, peak_memory = j.value ->> 8, finished_at = j.value ->> 9, \
                module_hash = CASE WHEN step_runs.status = 'pending' AND j.value ->> 11 IS NOT NULL \
                                   THEN j.value ->> 10 ELSE step_runs.module_hash END, \
                started_at = CASE WHEN step_runs.status = 'pending' AND j.value ->> 11 IS NOT NULL \
                                  THEN j.value ->> 11 ELSE step_runs.started_at END \
         FROM json_each(?1) AS j \
         WHERE step_runs.id = j.value ->> 0 AND step_runs.status IN ('pending', 'running') \
         RETURNING step_runs.id",
    )
    .bind(Value::from(rows).to_string())
    .fetch_all(&mut *conn)
    .await
    .context("ending step runs")?;
    Ok(ended.into_iter().collect())
}

fn run_end_row(task_id: i64, run_id: i64, end: &RunEnd) -> Value {
    json!([
        task_id,
        run_id,
        end.task_status.as_str(),
        end.last_result.as_str(),
        opt_ms(end.next_run_at),
        end.attempts,
        end.progress,
        end.message,
        ms(end.finished_at),
        end.resume_next.then_some(run_id),
        end.run_status.as_str(),
    ])
}

/// The guarded task update decides: a run ends only while its task is still
/// running on it (not rescued meanwhile). Then the runs it applied to, and
/// their step runs left pending (skipped) or running (interrupted). Returns
/// the ids of the tasks whose run ended (RETURNING cannot name `json_each`).
/// The unary `+` keeps SQLite from scanning every running task through the
/// status index instead of looking each task up by id.
async fn end_runs(conn: &mut SqliteConnection, rows: Vec<Value>) -> StoreResult<Vec<i64>> {
    let rows = Value::from(rows).to_string();
    let ended: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = j.value ->> 2, last_result = j.value ->> 3, next_run_at = j.value ->> 4, \
                attempts = j.value ->> 5, progress = j.value ->> 6, \
                message = COALESCE(j.value ->> 7, tasks.message), finished_at = j.value ->> 8, \
                updated_at = j.value ->> 8, resume_from_run_id = j.value ->> 9, current_run_id = NULL, \
                lease_owner = NULL, lease_expires_at = NULL, cancel_requested = 0, \
                pending_trigger = NULL, pending_step_id = NULL \
         FROM json_each(?1) AS j \
         WHERE tasks.id = j.value ->> 0 AND tasks.current_run_id = j.value ->> 1 AND +tasks.status = 'running' \
         RETURNING tasks.id",
    )
    .bind(&rows)
    .fetch_all(&mut *conn)
    .await
    .context("ending the runs' tasks")?;
    if ended.is_empty() {
        return Ok(ended);
    }
    let applied = Value::from(ended.clone()).to_string();
    sqlx::query(
        "UPDATE runs SET status = j.value ->> 10, message = j.value ->> 7, finished_at = j.value ->> 8 \
         FROM json_each(?1) AS j \
         WHERE runs.id = j.value ->> 1 AND runs.task_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(&rows)
    .bind(&applied)
    .execute(&mut *conn)
    .await
    .context("ending the runs")?;
    sqlx::query(
        "UPDATE step_runs SET status = CASE status WHEN 'pending' THEN 'skipped' ELSE 'interrupted' END, \
                error = CASE status WHEN 'running' THEN 'interrupted: the run ended' ELSE error END, \
                finished_at = CASE status WHEN 'running' THEN j.value ->> 8 ELSE finished_at END \
         FROM json_each(?1) AS j \
         WHERE step_runs.run_id = j.value ->> 1 AND step_runs.status IN ('pending', 'running') \
           AND j.value ->> 0 IN (SELECT value FROM json_each(?2))",
    )
    .bind(&rows)
    .bind(&applied)
    .execute(&mut *conn)
    .await
    .context("closing the runs' step runs")?;
    Ok(ended)
}
