//! Claiming due tasks: one write transaction per batch, run on the writer's
//! handle directly (see [`super::direct`]), so its statements cost what SQLite
//! takes to run them and nothing more.
//!
//! 1. the due tasks are picked (one index range scan per priority);
//! 2. per task: its run is inserted, then the task row is marked running and
//!    pointed at the run in one update;
//! 3. the tasks' steps, details and sealed secrets, one statement of each
//!    kind for the whole claim; per task, for a run that resumes another,
//!    the step runs it reuses;
//! 4. per step: its step run is inserted;
//! 5. the controllers' modules and the tasks' recent run durations, so the
//!    executor reads nothing per run; artifacts are carried into resuming
//!    runs and checkpoints of fresh runs cleared.
//!
//! It runs in the writer's turn (see [`super::turn`]), after the executor's
//! writes of that turn.

use super::at_hand::{AtHand, Sql};
use super::counts::TaskMoves;
use super::direct::{TASK_COLUMNS, task_from_row};
use super::limits::{admit_due, take_slots};
use super::rows::{json_ids, ms, parse, parse_json, task_columns, time};
use super::turn::ClaimDue;
use crate::store::limits;
use crate::store::{
    ClaimedRun, ModuleRef, PlannedStep, Priority, RunTrigger, SealedSecret, Step, StepRunStatus,
    StepStatus, Task, TaskStatus,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::sync::LazyLock;

/// The due tasks, in claim order. They are picked by one index range scan per
/// priority (highest first), each stopping after `limit` rows, then merged: a
/// single `ORDER BY priority DESC, next_run_at` over all scheduled tasks would
/// instead walk through every not-yet-due task of a higher priority. Tasks
/// that a concurrency or rate limit holds back are passed over (see
/// [`crate::store::limits`]); the full modules are worked out once per claim
/// (MATERIALIZED), not for every task looked at.
static DUE_SQL: LazyLock<String> = LazyLock::new(|| due_sql(true));

/// [`DUE_SQL`] when no module is deactivated or limited (see
/// [`limits::MODULES_HELD_SQL`], read in the claim's transaction): no task
/// can then be held back by its modules, and the walks of each due task's
/// steps and their modules are left out.
static DUE_PLAIN_SQL: LazyLock<String> = LazyLock::new(|| due_sql(false));

/// The due-task query, with or without the conditions on the tasks' modules.
fn due_sql(modules_held: bool) -> String {
    let mut ranks: Vec<i64> = Priority::ALL.iter().map(|p| p.rank()).collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    // The conditions on the tasks' modules: the full modules, the walk that
    // passes over tasks they hold back, and whether a task uses a limited one.
    let (blocked, held_by_modules, uses_limited) = if modules_held {
        (
            format!(
                "blocked AS MATERIALIZED ({}), ",
                limits::blocked_modules_sql("?1")
            ),
            format!("AND {}", limits::not_held_by_modules_sql("")),
            limits::uses_limited_sql(""),
        )
    } else {
        (String::new(), String::new(), "0".to_string())
    };
    let per_priority: Vec<String> = ranks
        .iter()
        .map(|rank| {
            format!(
                "SELECT * FROM (SELECT id, priority, next_run_at FROM tasks AS t \
                 WHERE status = 'scheduled' AND priority = {rank} AND next_run_at <= ?1 \
                   {held_by_modules} AND {task_rate} \
                 ORDER BY next_run_at, id LIMIT ?2)",
                task_rate = limits::task_rate_sql("?1"),
            )
        })
        .collect();
    format!(
        "WITH {blocked}due AS ({}) \
         SELECT {}, resume_from_run_id, pending_trigger, pending_step_id, {} FROM tasks AS t \
         WHERE id IN (SELECT id FROM due ORDER BY priority DESC, next_run_at, id LIMIT ?2) \
         ORDER BY priority DESC, next_run_at, id",
        per_priority.join(" UNION ALL "),
        task_columns!(),
        uses_limited,
    )
}

/// Marks one due task running on its new run. No RETURNING: the claim
/// already read the row, and SQLite buffers returned rows in a temporary
/// b-tree, which cost more than the update itself. The message starts empty
/// even for a run that resumes (whose bar continues where it stopped): what
/// the task shows is then this run's own, and a retry that succeeds does
/// not keep the error of the run it retried.
const MARK_RUNNING_SQL: &str = "UPDATE tasks SET status = 'running', attempts = attempts + 1, \
        lease_owner = ?3, lease_expires_at = ?4, last_run_at = ?5, updated_at = ?5, \
        cancel_requested = 0, current_run_id = ?2, pending_trigger = NULL, pending_step_id = NULL, \
        progress = CASE WHEN resume_from_run_id IS NULL THEN 0 ELSE progress END, \
        message = NULL \
     WHERE id = ?1";

/// The per-task statements of a claim (see [`AtHand`]).
type Hot<'c> = AtHand<'c, 10>;

const CLEAR_CHECKPOINTS: Sql = (0, "DELETE FROM checkpoints WHERE task_id = ?1");
const STEPS: Sql = (
    1,
    "SELECT id, task_id, sort_order, controller, settings, max_execution_time, max_memory, \
            interrupt_on_step_fault, status \
     FROM steps WHERE task_id IN (SELECT value FROM json_each(?1)) ORDER BY task_id, sort_order, id",
);
const DETAILS: Sql = (
    2,
    "SELECT task_id, key, value FROM task_details \
     WHERE task_id IN (SELECT value FROM json_each(?1)) ORDER BY task_id, key",
);
const SECRETS: Sql = (
    3,
    "SELECT task_id, name, nonce, ciphertext FROM task_secrets \
     WHERE task_id IN (SELECT value FROM json_each(?1)) ORDER BY task_id, name",
);
const CARRY_ARTIFACTS: Sql = (
    4,
    "INSERT INTO artifacts (task_id, run_id, step_id, name, size, created_at, updated_at) \
         SELECT task_id, ?2, step_id, name, size, created_at, updated_at FROM artifacts WHERE run_id = ?1",
);
/// The carried artifacts' chunks, in the order written (ids follow the
/// insertion order, see migration 0003).
const CARRY_ARTIFACT_CHUNKS: Sql = (
    9,
    "INSERT INTO artifact_chunks (artifact_id, data) \
         SELECT carried.id, chunk.data FROM artifacts AS resumed \
         JOIN artifacts AS carried ON carried.run_id = ?2 AND carried.name = resumed.name \
         JOIN artifact_chunks AS chunk ON chunk.artifact_id = resumed.id \
         WHERE resumed.run_id = ?1 ORDER BY chunk.id",
);
/// The step runs of the resumed run that the resuming run reuses: those
/// that completed (or were reused), of steps not changed since that run
/// started (a changed step runs again: its result was made by the step as
/// it was; see migration 0008).
const REUSABLE: Sql = (
    5,
    "SELECT sr.step_id, sr.result, sr.outcome, sr.module_hash, sr.progress, sr.message \
         FROM step_runs AS sr JOIN runs AS r ON r.id = sr.run_id \
         WHERE sr.run_id = ?1 AND sr.status IN ('completed', 'reused') \
           AND NOT EXISTS (SELECT 1 FROM steps AS s \
                           WHERE s.id = sr.step_id AND s.edited_at >= r.started_at)",
);
const INSERT_STEP_RUN: Sql = (
    6,
    "INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, result, outcome, \
                module_hash, progress, message) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
);
const MODULE: Sql = (
    7,
    "SELECT hash, active, max_running IS NOT NULL OR max_starts_per_minute IS NOT NULL \
     FROM modules WHERE path = ?1",
);
const PAST_DURATIONS: Sql = (
    8,
    "SELECT (finished_at - started_at) / 1000.0 FROM runs \
         WHERE task_id = ?1 AND status = 'completed' AND finished_at IS NOT NULL \
         ORDER BY id DESC LIMIT ?2",
);

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

/// A task just claimed: its row as the claim left it, and its new run.
struct Claimed {
    task: Task,
    shape: Shape,
    run_id: i64,
    /// It never ran before (see where it is set).
    first_run: bool,
}

/// One due task as picked, before it is claimed.
struct Due {
    task: Task,
    shape: Shape,
    /// An enabled step of it names a limited module.
    uses_limited: bool,
}

/// Claim in the writer's open transaction (see [`super::turn`]).
pub(super) fn claim_in_transaction(
    tx: &Transaction,
    claim: &ClaimDue,
    moves: &mut TaskMoves,
) -> Result<Vec<ClaimedRun>> {
    let ClaimDue {
        node,
        now,
        lease_until,
        limit,
    } = claim;
    let (now, lease_until) = (*now, *lease_until);
    let mut due = pick_due(tx, now, *limit)?;
    // The modules' slots each admitted task takes, when any is limited.
    let limited = due.iter().any(|d| d.uses_limited);
    let mut slots_of = HashMap::new();
    if limited {
        let order: Vec<i64> = due.iter().map(|d| d.task.id).collect();
        slots_of = admit_due(tx, now, &order)?;
        due.retain(|d| slots_of.contains_key(&d.task.id));
    }
    let mut slots = Vec::new();
    let mut claimed = Vec::with_capacity(due.len());
    {
        let mut insert_run = tx.prepare_cached(
            "INSERT INTO runs (task_id, attempt, status, trigger, node, started_at) \
             VALUES (?1, ?2, 'running', ?3, ?4, ?5)",
        )?;
        let mut mark_running = tx.prepare_cached(MARK_RUNNING_SQL)?;
        for Due {
            mut task, shape, ..
        } in due
        {
            insert_run
                .execute(params![
                    task.id,
                    task.attempts + 1,
                    shape.trigger().as_str(),
                    node,
                    ms(now)
                ])
                .context("inserting a run")?;
            let run_id = tx.last_insert_rowid();
            if let Some(modules) = slots_of.remove(&task.id) {
                slots.extend(modules.into_iter().map(|module| (module, run_id)));
            }
            let marked = mark_running
                .execute(params![task.id, run_id, node, ms(lease_until), ms(now)])
                .context("marking a task running")?;
            // `pick_due` chose scheduled tasks, in this transaction.
            moves.moved(TaskStatus::Scheduled, TaskStatus::Running, marked as i64);
            // Only a claim sets `last_run_at`, and nothing clears it: a task
            // without one has never run, so it has no checkpoints to clear
            // and no past runs to read.
            let first_run = task.last_run_at.is_none();
            // The row as the update left it.
            let at = time(ms(now));
            task.status = TaskStatus::Running;
            task.attempts += 1;
            task.last_run_at = Some(at);
            task.updated_at = at;
            task.current_run_id = Some(run_id);
            if shape.resume_from.is_none() {
                task.progress = 0.0;
            }
            task.message = None;
            claimed.push(Claimed {
                task,
                shape,
                run_id,
                first_run,
            });
        }
    }
    if limited {
        take_slots(tx, now, &slots)?;
    }
    let mut runs = Vec::with_capacity(claimed.len());
    let mut modules = HashMap::new();
    let mut hot = Hot::new(tx);
    let mut sealed = load_children(&mut hot, &mut claimed)?;
    for Claimed {
        task,
        shape,
        run_id,
        first_run,
    } in claimed
    {
        let secrets = sealed.remove(&task.id).unwrap_or_default();
        let reusable = match shape.resumes() {
            Some(previous) => {
                carry_artifacts(&mut hot, previous, run_id)?;
                load_reusable(&mut hot, previous)?
            }
            None => {
                if !first_run {
                    hot.get(CLEAR_CHECKPOINTS)?
                        .execute([task.id])
                        .context("clearing checkpoints of a fresh run")?;
                }
                HashMap::new()
            }
        };
        let mut steps = insert_step_runs(&mut hot, &task, &shape, run_id, &reusable)?;
        for planned in &mut steps {
            planned.module = module(&mut hot, &mut modules, &planned.step.controller)?;
        }
        runs.push(ClaimedRun {
            run_id,
            attempt: task.attempts,
            trigger: shape.trigger(),
            secrets,
            past_durations: if first_run {
                Vec::new()
            } else {
                past_durations(&mut hot, task.id)?
            },
            steps,
            task,
        });
    }
    Ok(runs)
}

fn pick_due(tx: &Transaction, now: DateTime<Utc>, limit: i64) -> Result<Vec<Due>> {
    let modules_held: bool = tx
        .prepare_cached(limits::MODULES_HELD_SQL)?
        .query_row([], |row| row.get(0))
        .context("looking for deactivated or limited modules")?;
    let due_sql = if modules_held {
        &*DUE_SQL
    } else {
        &*DUE_PLAIN_SQL
    };
    let mut statement = tx.prepare_cached(due_sql)?;
    let mut rows = statement.query(params![ms(now), limit])?;
    let mut due = Vec::new();
    while let Some(row) = rows.next().context("picking due tasks")? {
        due.push(Due {
            task: task_from_row(row)?,
            shape: Shape {
                resume_from: row.get(TASK_COLUMNS)?,
                pending_trigger: row.get(TASK_COLUMNS + 1)?,
                pending_step: row.get(TASK_COLUMNS + 2)?,
            },
            uses_limited: row.get(TASK_COLUMNS + 3)?,
        });
    }
    Ok(due)
}

/// Fill in the claimed tasks' steps (in run order), details and secret
/// names, with one statement of each kind for the whole claim (a task's
/// details and secrets are mostly none: three lookups per task found nothing
/// most of the time); returns each task's sealed secrets by task id.
fn load_children(
    hot: &mut Hot,
    claimed: &mut [Claimed],
) -> Result<HashMap<i64, Vec<SealedSecret>>> {
    let ids = json_ids(claimed.iter().map(|c| c.task.id));
    let index: HashMap<i64, usize> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| (c.task.id, i))
        .collect();
    let mut rows = hot.get(STEPS)?.query([&ids])?;
    while let Some(row) = rows.next().context("loading steps")? {
        let settings: String = row.get(4)?;
        let status: String = row.get(8)?;
        let step = Step {
            id: row.get(0)?,
            task_id: row.get(1)?,
            sort_order: row.get(2)?,
            controller: row.get(3)?,
            settings: parse_json(&settings)?,
            max_execution_time: row.get(5)?,
            max_memory: row.get(6)?,
            interrupt_on_step_fault: row.get(7)?,
            status: parse::<StepStatus>(&status)?,
        };
        task_of(claimed, &index, step.task_id)?.steps.push(step);
    }
    drop(rows);
    let mut rows = hot.get(DETAILS)?.query([&ids])?;
    while let Some(row) = rows.next().context("loading task details")? {
        let value: String = row.get(2)?;
        task_of(claimed, &index, row.get(0)?)?
            .details
            .insert(row.get(1)?, parse_json(&value)?);
    }
    drop(rows);
    let mut rows = hot.get(SECRETS)?.query([&ids])?;
    let mut sealed: HashMap<i64, Vec<SealedSecret>> = HashMap::new();
    while let Some(row) = rows.next().context("loading secrets")? {
        let task_id: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        task_of(claimed, &index, task_id)?
            .secret_names
            .push(name.clone());
        sealed.entry(task_id).or_default().push(SealedSecret {
            name,
            nonce: row.get(2)?,
            ciphertext: row.get(3)?,
        });
    }
    Ok(sealed)
}

/// The claimed task a child row belongs to.
fn task_of<'a>(
    claimed: &'a mut [Claimed],
    index: &HashMap<i64, usize>,
    task_id: i64,
) -> Result<&'a mut Task> {
    let i = index
        .get(&task_id)
        .context("a child row of a task that was not claimed")?;
    Ok(&mut claimed[*i].task)
}

/// A resuming run continues the artifacts of the run it resumes (a dump that
/// stopped half-way is completed, not restarted in an empty file).
fn carry_artifacts(hot: &mut Hot, previous: i64, run_id: i64) -> Result<()> {
    hot.get(CARRY_ARTIFACTS)?
        .execute([previous, run_id])
        .context("carrying artifacts into the resuming run")?;
    hot.get(CARRY_ARTIFACT_CHUNKS)?
        .execute([previous, run_id])
        .context("carrying artifact chunks into the resuming run")?;
    Ok(())
}

/// Step id → the step run of `previous` that the resuming run reuses.
fn load_reusable(hot: &mut Hot, previous: i64) -> Result<HashMap<i64, Reusable>> {
    let statement = hot.get(REUSABLE)?;
    let mut rows = statement.query([previous])?;
    let mut reusable = HashMap::new();
    while let Some(row) = rows.next().context("loading reusable step runs")? {
        reusable.insert(
            row.get(0)?,
            Reusable {
                result: row.get(1)?,
                outcome: row.get(2)?,
                module_hash: row.get(3)?,
                progress: row.get(4)?,
                message: row.get(5)?,
            },
        );
    }
    Ok(reusable)
}

/// What each step of a claimed task does in its new run.
fn plan(shape: &Shape, step: &Step, reusable: &HashMap<i64, Reusable>) -> StepRunStatus {
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
    if shape.resumes().is_some() && reusable.contains_key(&step.id) {
        StepRunStatus::Reused
    } else {
        StepRunStatus::Pending
    }
}

/// Insert the step runs of a claimed run; returns its planned steps in order.
fn insert_step_runs(
    hot: &mut Hot,
    task: &Task,
    shape: &Shape,
    run_id: i64,
    reusable: &HashMap<i64, Reusable>,
) -> Result<Vec<PlannedStep>> {
    let db = hot.db();
    let insert = hot.get(INSERT_STEP_RUN)?;
    let mut planned = Vec::with_capacity(task.steps.len());
    // Steps are loaded in (sort_order, id) order, the order they run in.
    for step in &task.steps {
        let status = plan(shape, step, reusable);
        let copied = (status == StepRunStatus::Reused)
            .then(|| reusable.get(&step.id))
            .flatten();
        insert
            .execute(params![
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
            ])
            .context("inserting a step run")?;
        planned.push(PlannedStep {
            step: step.clone(),
            step_run_id: db.last_insert_rowid(),
            status,
            module: None,
        });
    }
    Ok(planned)
}

/// The registered module a claimed step names, looked up once per claim.
fn module(
    hot: &mut Hot,
    known: &mut HashMap<String, Option<ModuleRef>>,
    path: &str,
) -> Result<Option<ModuleRef>> {
    if let Some(module) = known.get(path) {
        return Ok(module.clone());
    }
    let module = hot
        .get(MODULE)?
        .query_row([path], |row| {
            Ok(ModuleRef {
                hash: row.get(0)?,
                active: row.get(1)?,
                limited: row.get(2)?,
            })
        })
        .optional()
        .context("loading a claimed step's module")?;
    known.insert(path.to_string(), module.clone());
    Ok(module)
}

/// How long the task's last completed runs took, in seconds, newest first.
fn past_durations(hot: &mut Hot, task_id: i64) -> Result<Vec<f64>> {
    let statement = hot.get(PAST_DURATIONS)?;
    let durations = statement
        .query_map(params![task_id, PAST_RUNS], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<f64>>>()
        .context("loading the task's past run durations")?;
    Ok(durations)
}
