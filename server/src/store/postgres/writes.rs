//! The executor's writes (step starts, progress, step ends, run ends) applied
//! in order in one transaction: one commit (one WAL flush) for a batch of
//! many runs. Every statement states its own condition (a step run ends
//! only while pending or running, a run only while its task is still on
//! it), which PostgreSQL re-checks on the latest row version: a rescuer on
//! another node and this node's executor cannot both end the same run.

use super::PostgresStore;
use super::rows::{ms, opt_ms};
use crate::store::{RunEnd, StepRunEnd, StoreError, StoreResult, WriteOp};
use anyhow::{Context, Result};
use serde_json::Value;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;

const START_STEP: &str = "UPDATE step_runs SET status = 'running', module_hash = $2, started_at = $3 \
     WHERE id = $1 AND status = 'pending'";

const END_STEP: &str = "UPDATE step_runs SET status = $2, outcome = $3, result = $4, error = $5, \
        progress = $6, message = $7, fuel_used = $8, peak_memory = $9, finished_at = $10, \
        module_hash = CASE WHEN status = 'pending' AND $12::bigint IS NOT NULL \
                           THEN $11 ELSE module_hash END, \
        started_at = CASE WHEN status = 'pending' AND $12::bigint IS NOT NULL \
                          THEN $12 ELSE started_at END \
     WHERE id = $1 AND status IN ('pending', 'running')";

const END_RUN_TASK: &str = "UPDATE tasks SET status = $3, last_result = $4, next_run_at = $5, \
        attempts = $6, progress = $7, message = COALESCE($8, message), finished_at = $9, \
        updated_at = $9, resume_from_run_id = $10, current_run_id = NULL, \
        lease_owner = NULL, lease_expires_at = NULL, cancel_requested = FALSE, \
        pending_trigger = NULL, pending_step_id = NULL \
     WHERE id = $1 AND current_run_id = $2 AND status = 'running'";

const END_RUN: &str =
    "UPDATE runs SET status = $2, message = $3, finished_at = $4, rescued = $5 WHERE id = $1";

const CLOSE_STEP_RUNS: &str = "UPDATE step_runs SET \
        status = CASE status WHEN 'pending' THEN 'skipped' ELSE 'interrupted' END, \
        error = CASE status WHEN 'running' THEN 'interrupted: the run ended' ELSE error END, \
        finished_at = CASE status WHEN 'running' THEN $2 ELSE finished_at END \
     WHERE run_id = $1 AND status IN ('pending', 'running')";

const SAVE_STEP_PROGRESS: &str = "UPDATE step_runs SET progress = $3, message = COALESCE($4, message) \
     WHERE id = $1 AND run_id = $2 AND status = 'running'";

const SAVE_TASK_PROGRESS: &str = "UPDATE tasks SET progress = $2, message = COALESCE($3, message) \
     WHERE id = (SELECT task_id FROM runs WHERE id = $1) AND current_run_id = $1 \
       AND status = 'running'";

pub(super) async fn apply_writes(store: &PostgresStore, ops: &[WriteOp]) -> StoreResult<Vec<bool>> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.pool.begin().await?;
    let applied = apply_in(&mut tx, ops).await;
    super::settle(tx, applied.map_err(StoreError::from)).await
}

/// `ops` in order; one `applied` answer per op (`StartStep` and
/// `SaveProgress` are always `true`).
async fn apply_in(tx: &mut PgConnection, ops: &[WriteOp]) -> Result<Vec<bool>> {
    // A step that starts and ends within one batch (most do) is written once:
    // its start rides on its end.
    let mut folded: HashMap<i64, Option<(Option<&str>, i64)>> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::FinishStep { step_run_id, .. } => Some((*step_run_id, None)),
            _ => None,
        })
        .collect();
    let mut applied = Vec::with_capacity(ops.len());
    for op in ops {
        applied.push(match op {
            WriteOp::StartStep {
                step_run_id,
                module_hash,
                at,
            } => {
                match folded.get_mut(step_run_id) {
                    Some(start) => *start = Some((module_hash.as_deref(), ms(*at))),
                    None => {
                        sqlx::query(START_STEP)
                            .bind(step_run_id)
                            .bind(module_hash)
                            .bind(ms(*at))
                            .execute(&mut *tx)
                            .await
                            .context("starting a step run")?;
                    }
                }
                true
            }
            WriteOp::FinishStep { step_run_id, end } => {
                let start = folded.get(step_run_id).copied().flatten();
                end_step(tx, *step_run_id, end, start).await?
            }
            WriteOp::FinishRun {
                task_id,
                run_id,
                end,
            } => end_run(tx, *task_id, *run_id, end).await?,
            WriteOp::SaveProgress {
                run_id,
                step_run_id,
                step_progress,
                task_progress,
                message,
            } => {
                sqlx::query(SAVE_STEP_PROGRESS)
                    .bind(step_run_id)
                    .bind(run_id)
                    .bind(step_progress)
                    .bind(message)
                    .execute(&mut *tx)
                    .await
                    .context("saving a step's progress")?;
                sqlx::query(SAVE_TASK_PROGRESS)
                    .bind(run_id)
                    .bind(task_progress)
                    .bind(message)
                    .execute(&mut *tx)
                    .await
                    .context("saving a task's progress")?;
                true
            }
        });
    }
    Ok(applied)
}

/// A step run ends once: only while pending or running. `start`: the module
/// hash and start time of a start folded into this end, which applies as a
/// start would: only to a pending step run.
async fn end_step(
    tx: &mut PgConnection,
    step_run_id: i64,
    end: &StepRunEnd,
    start: Option<(Option<&str>, i64)>,
) -> Result<bool> {
    let changed = sqlx::query(END_STEP)
        .bind(step_run_id)
        .bind(end.status.as_str())
        .bind(end.outcome.to_string())
        .bind(end.result.as_ref().map(Value::to_string))
        .bind(&end.error)
        .bind(end.progress)
        .bind(&end.message)
        .bind(end.fuel_used)
        .bind(end.peak_memory)
        .bind(ms(end.finished_at))
        .bind(start.and_then(|(hash, _)| hash))
        .bind(start.map(|(_, at)| at))
        .execute(&mut *tx)
        .await
        .context("ending a step run")?
        .rows_affected();
    Ok(changed == 1)
}

/// The guarded task update decides: a run ends only while its task is still
/// running on it (not rescued meanwhile). Then the run, and its step runs
/// left pending (skipped) or running (interrupted).
async fn end_run(tx: &mut PgConnection, task_id: i64, run_id: i64, end: &RunEnd) -> Result<bool> {
    let finished_at = ms(end.finished_at);
    let changed = sqlx::query(END_RUN_TASK)
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
        .execute(&mut *tx)
        .await
        .context("ending the run's task")?
        .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query(END_RUN)
        .bind(run_id)
        .bind(end.run_status.as_str())
        .bind(&end.message)
        .bind(finished_at)
        .bind(end.rescued)
        .execute(&mut *tx)
        .await
        .context("ending the run")?;
    sqlx::query(CLOSE_STEP_RUNS)
        .bind(run_id)
        .bind(finished_at)
        .execute(&mut *tx)
        .await
        .context("closing the run's step runs")?;
    Ok(true)
}
