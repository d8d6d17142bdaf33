//! The executor's writes (step starts, progress, step ends, run ends) applied in order,
//! one prepared statement per kind, inside the writer's turn (see
//! [`super::turn`]): a batch of hundreds of runs costs one commit and no
//! hand-off between statements.

use super::at_hand::{AtHand, Sql};
use super::counts::TaskMoves;
use super::rows::{ms, opt_ms};
use crate::store::{RunEnd, StepRunEnd, TaskStatus, WriteAnswer, WriteOp};
use anyhow::{Context, Result};
use rusqlite::{Transaction, params};
use serde_json::Value;
use std::collections::HashMap;

/// The statements of a batch of writes (see [`AtHand`]).
type Hot<'c> = AtHand<'c, 9>;

const START_STEP: Sql = (
    0,
    "UPDATE step_runs SET status = 'running', module_hash = ?2, started_at = ?3 \
         WHERE id = ?1 AND status = 'pending'",
);
const END_STEP: Sql = (
    1,
    "UPDATE step_runs SET status = ?2, outcome = ?3, result = ?4, error = ?5, progress = ?6, \
                    message = ?7, fuel_used = ?8, peak_memory = ?9, finished_at = ?10, \
                    module_hash = CASE WHEN status = 'pending' AND ?12 IS NOT NULL \
                                       THEN ?11 ELSE module_hash END, \
                    started_at = CASE WHEN status = 'pending' AND ?12 IS NOT NULL \
                                      THEN ?12 ELSE started_at END \
             WHERE id = ?1 AND status IN ('pending', 'running')",
);
const END_RUN_TASK: Sql = (
    2,
    "UPDATE tasks SET status = ?3, last_result = ?4, next_run_at = ?5, attempts = ?6, \
                    progress = ?7, message = COALESCE(?8, message), finished_at = ?9, \
                    updated_at = ?9, resume_from_run_id = ?10, current_run_id = NULL, \
                    lease_owner = NULL, lease_expires_at = NULL, cancel_requested = 0, \
                    pending_trigger = NULL, pending_step_id = NULL \
             WHERE id = ?1 AND current_run_id = ?2 AND status = 'running'",
);
const END_RUN: Sql = (
    3,
    "UPDATE runs SET status = ?2, message = ?3, finished_at = ?4, rescued = ?5 WHERE id = ?1",
);
const CLOSE_STEP_RUNS: Sql = (
    4,
    "UPDATE step_runs SET status = CASE status WHEN 'pending' THEN 'skipped' ELSE 'interrupted' END, \
                error = CASE status WHEN 'running' THEN 'interrupted: the run ended' ELSE error END, \
                finished_at = CASE status WHEN 'running' THEN ?2 ELSE finished_at END \
         WHERE run_id = ?1 AND status IN ('pending', 'running')",
);
const SAVE_STEP_PROGRESS: Sql = (
    5,
    "UPDATE step_runs SET progress = ?3, message = COALESCE(?4, message) \
         WHERE id = ?1 AND run_id = ?2 AND status = 'running'",
);
const SAVE_TASK_PROGRESS: Sql = (
    6,
    "UPDATE tasks SET progress = ?2, message = COALESCE(?3, message) \
         WHERE id = (SELECT task_id FROM runs WHERE id = ?1) AND current_run_id = ?1 \
           AND status = 'running'",
);

/// The completion hook of a run end (migration 0010): one delivery, due at
/// once, when the task has a hook URL; written with the run end so that a
/// crash never loses it.
const QUEUE_HOOK: Sql = (
    7,
    "INSERT INTO hook_deliveries (task_id, run_id, url, status, next_attempt_at, created_at) \
         SELECT id, ?2, hook_url, 'pending', ?3, ?3 FROM tasks WHERE id = ?1 AND hook_url IS NOT NULL \
         ON CONFLICT (run_id) DO NOTHING",
);

/// The version of a task a waited run end asks about (see
/// `WriteOp::FinishRun::claimed_version`), read in the writer's transaction
/// just before the run end updates it: nothing else writes in between.
const TASK_VERSION: Sql = (8, "SELECT updated_at FROM tasks WHERE id = ?1");

/// Apply `ops` in order in the writer's open transaction (see
/// [`super::turn`]); one answer per op, as the single-op store methods give
/// it (`StartStep` and `SaveProgress` always apply).
pub(super) fn apply_in(
    tx: &Transaction,
    ops: &[WriteOp],
    moves: &mut TaskMoves,
) -> Result<Vec<WriteAnswer>> {
    let mut hot = Hot::new(tx);
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
                    None => start_step(&mut hot, *step_run_id, module_hash.as_deref(), ms(*at))?,
                }
                WriteAnswer::Applied
            }
            WriteOp::FinishStep { step_run_id, end } => {
                let start = folded.get(step_run_id).copied().flatten();
                WriteAnswer::from_applied(end_step(&mut hot, *step_run_id, end, start)?)
            }
            WriteOp::FinishRun {
                task_id,
                run_id,
                end,
                claimed_version,
            } => {
                let claimed = match claimed_version {
                    Some(version) => task_version(&mut hot, *task_id)? == Some(ms(*version)),
                    None => false,
                };
                match end_run(&mut hot, *task_id, *run_id, end, moves)? {
                    true if claimed => WriteAnswer::AppliedToClaimed,
                    applied => WriteAnswer::from_applied(applied),
                }
            }
            WriteOp::SaveProgress {
                run_id,
                step_run_id,
                step_progress,
                task_progress,
                message,
            } => {
                save_progress(
                    &mut hot,
                    *run_id,
                    *step_run_id,
                    *step_progress,
                    *task_progress,
                    message.as_deref(),
                )?;
                WriteAnswer::Applied
            }
        });
    }
    Ok(applied)
}

fn task_version(hot: &mut Hot, task_id: i64) -> Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    hot.get(TASK_VERSION)?
        .query_row(params![task_id], |row| row.get(0))
        .optional()
        .context("reading a waited task's version")
}

/// Only a pending step run starts: one already ended (rescued) stays ended.
fn start_step(hot: &mut Hot, step_run_id: i64, module_hash: Option<&str>, at: i64) -> Result<()> {
    hot.get(START_STEP)?
        .execute(params![step_run_id, module_hash, at])
        .context("starting a step run")?;
    Ok(())
}

/// A step run ends once: only while pending or running. `start`: the module
/// hash and start time of a start folded into this end, which applies as a
/// start would: only to a pending step run.
fn end_step(
    hot: &mut Hot,
    step_run_id: i64,
    end: &StepRunEnd,
    start: Option<(Option<&str>, i64)>,
) -> Result<bool> {
    let changed = hot
        .get(END_STEP)?
        .execute(params![
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
        .context("ending a step run")?;
    Ok(changed == 1)
}

/// The guarded task update decides: a run ends only while its task is still
/// running on it (not rescued meanwhile). Then the run, and its step runs
/// left pending (skipped) or running (interrupted), and its completion hook.
fn end_run(
    hot: &mut Hot,
    task_id: i64,
    run_id: i64,
    end: &RunEnd,
    moves: &mut TaskMoves,
) -> Result<bool> {
    let finished_at = ms(end.finished_at);
    let changed = hot
        .get(END_RUN_TASK)?
        .execute(params![
            task_id,
            run_id,
            end.task_status.as_str(),
            end.last_result.as_str(),
            opt_ms(end.next_run_at),
            end.attempts,
            end.progress,
            end.message,
            finished_at,
            end.resume_next.then_some(run_id),
        ])
        .context("ending the run's task")?;
    if changed == 0 {
        return Ok(false);
    }
    moves.moved(TaskStatus::Running, end.task_status, 1);
    hot.get(END_RUN)?
        .execute(params![
            run_id,
            end.run_status.as_str(),
            end.message,
            finished_at,
            end.rescued
        ])
        .context("ending the run")?;
    hot.get(CLOSE_STEP_RUNS)?
        .execute(params![run_id, finished_at])
        .context("closing the run's step runs")?;
    hot.get(QUEUE_HOOK)?
        .execute(params![task_id, run_id, finished_at])
        .context("queueing the run's completion hook")?;
    Ok(true)
}

/// A running step's progress (and its task's), saved now and then so that a
/// restart shows roughly where a run was. Only while the step and its run are
/// still running: a late save never overwrites an end.
fn save_progress(
    hot: &mut Hot,
    run_id: i64,
    step_run_id: i64,
    step_progress: f64,
    task_progress: f64,
    message: Option<&str>,
) -> Result<()> {
    hot.get(SAVE_STEP_PROGRESS)?
        .execute(params![step_run_id, run_id, step_progress, message])
        .context("saving a step's progress")?;
    hot.get(SAVE_TASK_PROGRESS)?
        .execute(params![run_id, task_progress, message])
        .context("saving a task's progress")?;
    Ok(())
}
