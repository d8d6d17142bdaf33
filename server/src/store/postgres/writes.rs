//! The executor's writes (step starts, progress, step ends, run ends) applied
//! in order in one transaction: one commit (one WAL flush) for a batch of
//! many runs, and one round trip too — the batch travels as one JSON array
//! to `stepwise_apply_writes` (migration 0001), which runs each op's
//! statement in order on the server. Per-op statements from here cost a
//! round trip each, hundreds per batch on a busy node.
//!
//! Every statement states its own condition (a step run ends only while
//! pending or running, a run only while its task is still on it), which
//! PostgreSQL re-checks on the latest row version: a rescuer on another node
//! and this node's executor cannot both end the same run.

use super::PostgresStore;
use super::rows::{ms, opt_ms};
use crate::store::{StoreError, StoreResult, WriteOp};
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::HashMap;

pub(super) async fn apply_writes(store: &PostgresStore, ops: &[WriteOp]) -> StoreResult<Vec<bool>> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let payload = Value::from(encode(ops)).to_string();
    let mut attempt = 1;
    loop {
        match apply_once(store, ops, &payload, ops.len()).await {
            Err(error) if attempt < ATTEMPTS && super::retryable(&error) => {
                tracing::warn!(
                    "applying {} executor writes: {error:#}; trying again",
                    ops.len()
                );
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Tries of a batch that lost a deadlock (see [`super::retryable`]).
const ATTEMPTS: u32 = 3;

async fn apply_once(
    store: &PostgresStore,
    ops: &[WriteOp],
    payload: &str,
    count: usize,
) -> StoreResult<Vec<bool>> {
    let mut tx = store.pool.begin().await?;
    let applied: Result<Vec<bool>, _> =
        sqlx::query_scalar("SELECT stepwise_apply_writes($1::jsonb)")
            .bind(payload)
            .fetch_one(&mut *tx)
            .await
            .context("applying the executor's writes");
    let applied = applied.map_err(StoreError::from).and_then(|applied| {
        if applied.len() == count {
            Ok(applied)
        } else {
            Err(StoreError::Internal(anyhow::anyhow!(
                "the database answered {} of {} writes; is its stepwise_apply_writes \
                 from another Stepwise version?",
                applied.len(),
                count
            )))
        }
    });
    let applied = match applied {
        Ok(applied) => queue_hooks(&mut tx, ops, &applied).await.map(|()| applied),
        Err(error) => Err(error),
    };
    super::settle(tx, applied).await
}

/// The completion hooks of the run ends that applied (migration 0010): one
/// delivery each, due at once, for a task with a hook URL — in the run
/// ends' transaction, so a crash never loses one. A statement of its own
/// after `stepwise_apply_writes` rather than a branch inside it, set-based
/// (one round trip for all the batch's run ends), and only when a run ended.
async fn queue_hooks(
    tx: &mut sqlx::PgConnection,
    ops: &[WriteOp],
    applied: &[bool],
) -> StoreResult<()> {
    let (mut tasks, mut runs, mut ats) = (Vec::new(), Vec::new(), Vec::new());
    for (op, applied) in ops.iter().zip(applied) {
        if let (
            WriteOp::FinishRun {
                task_id,
                run_id,
                end,
            },
            true,
        ) = (op, applied)
        {
            tasks.push(*task_id);
            runs.push(*run_id);
            ats.push(ms(end.finished_at));
        }
    }
    if runs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO hook_deliveries (task_id, run_id, url, status, next_attempt_at, created_at) \
         SELECT t.id, e.run, t.hook_url, 'pending', e.at, e.at \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS e (task, run, at) \
         JOIN tasks AS t ON t.id = e.task WHERE t.hook_url IS NOT NULL \
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(&tasks)
    .bind(&runs)
    .bind(&ats)
    .execute(&mut *tx)
    .await
    .context("queueing the runs' completion hooks")?;
    Ok(())
}

/// The ops as `stepwise_apply_writes` takes them. A step that starts and
/// ends within one batch (most do) is written once: its start rides on its
/// end (and applies as a start would: only to a pending step run), and the
/// start itself becomes a no-op.
fn encode(ops: &[WriteOp]) -> Vec<Value> {
    let mut folded: HashMap<i64, Option<(Option<&str>, i64)>> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::FinishStep { step_run_id, .. } => Some((*step_run_id, None)),
            _ => None,
        })
        .collect();
    let mut encoded = Vec::with_capacity(ops.len());
    for op in ops {
        encoded.push(match op {
            WriteOp::StartStep {
                step_run_id,
                module_hash,
                at,
            } => match folded.get_mut(step_run_id) {
                Some(start) => {
                    *start = Some((module_hash.as_deref(), ms(*at)));
                    json!({ "k": "noop" })
                }
                None => json!({
                    "k": "start",
                    "id": step_run_id,
                    "hash": module_hash,
                    "at": ms(*at),
                }),
            },
            WriteOp::FinishStep { step_run_id, end } => {
                let start = folded.get(step_run_id).copied().flatten();
                json!({
                    "k": "end_step",
                    "id": step_run_id,
                    "status": end.status.as_str(),
                    "outcome": end.outcome.to_string(),
                    "result": end.result.as_ref().map(Value::to_string),
                    "error": end.error,
                    "progress": finite(end.progress),
                    "message": end.message,
                    "fuel": end.fuel_used,
                    "memory": end.peak_memory,
                    "at": ms(end.finished_at),
                    "start_hash": start.and_then(|(hash, _)| hash),
                    "start_at": start.map(|(_, at)| at),
                })
            }
            WriteOp::FinishRun {
                task_id,
                run_id,
                end,
            } => json!({
                "k": "end_run",
                "task": task_id,
                "run": run_id,
                "run_status": end.run_status.as_str(),
                "task_status": end.task_status.as_str(),
                "last_result": end.last_result.as_str(),
                "next_run_at": opt_ms(end.next_run_at),
                "attempts": end.attempts,
                "progress": finite(end.progress),
                "message": end.message,
                "at": ms(end.finished_at),
                "resume": end.resume_next.then_some(*run_id),
                "rescued": end.rescued,
            }),
            WriteOp::SaveProgress {
                run_id,
                step_run_id,
                step_progress,
                task_progress,
                message,
            } => json!({
                "k": "progress",
                "run": run_id,
                "id": step_run_id,
                "step_progress": finite(*step_progress),
                "task_progress": finite(*task_progress),
                "message": message,
            }),
        });
    }
    encoded
}

/// JSON has no NaN or infinity (serde_json would write `null`, which the
/// NOT NULL progress columns refuse): a broken progress counts as none.
fn finite(progress: f64) -> f64 {
    if progress.is_finite() { progress } else { 0.0 }
}
