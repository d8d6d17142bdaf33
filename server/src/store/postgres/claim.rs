//! Claiming due tasks: one transaction per batch, a fixed number of
//! statements whatever the batch size (rows travel as arrays, `unnest`ed).
//!
//! 1. the due tasks are picked and locked, in claim order, with
//!    `FOR UPDATE SKIP LOCKED`: a task another node is claiming (or a user
//!    is changing) right now is passed over, so two nodes claiming at once
//!    never take the same task and never wait for each other;
//! 2. their runs are inserted and the tasks marked running on them, in one
//!    statement;
//! 3. their steps, details and sealed secrets are read, and for the runs
//!    that resume another, the step runs they reuse; artifacts are carried
//!    into resuming runs and checkpoints of fresh runs cleared;
//! 4. the step runs are inserted;
//! 5. the controllers' modules and the tasks' recent run durations are read,
//!    so the executor reads nothing per run.

use super::PostgresStore;
use super::limits::{admit_due, take_slots};
use super::rows::{KIN_COLUMNS, Kin, load_children, ms, task_columns, task_from_row, time};
use crate::store::limits;
use crate::store::{
    ClaimedRun, ModuleRef, PlannedStep, Priority, RunTrigger, Step, StepRunStatus, StepStatus,
    StoreError, StoreResult, Task, TaskStatus,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The due tasks in claim order, locked (see the module docs): for each
/// priority in `$3` (highest first), one range of the `tasks_due` index
/// (`priority = rank`, due by `$1`), until `$2` are taken. One `ORDER BY
/// priority DESC, …` over all priorities would instead walk past every
/// not-yet-due task of a higher priority (a million high-priority tasks due
/// tomorrow would make every claim read a million entries), as SQLite's claim
/// says. The lateral join reads the priorities in the array's order and
/// stops pulling (and locking) rows once `$2` are taken: one round trip for
/// what was one query per priority. Tasks that a concurrency or rate limit
/// holds back are passed over (see [`crate::store::limits`]); the full
/// modules are a MATERIALIZED CTE, worked out once per claim: inlined, the
/// planner may work them out again for every task it looks at.
static DUE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH blocked AS MATERIALIZED ({blocked}) \
         SELECT t.* FROM unnest($3::bigint[]) AS p(rank) CROSS JOIN LATERAL (SELECT {columns}, \
            resume_from_run_id, pending_trigger, pending_step_id, {uses_limited} AS uses_limited, {kin} \
         FROM tasks AS t \
         WHERE status = 'scheduled' AND priority = p.rank AND next_run_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM steps AS s JOIN modules AS m ON m.path = s.controller \
                           WHERE s.task_id = t.id AND s.status = 'scheduled' \
                             AND (NOT m.active OR m.path IN (SELECT path FROM blocked))) \
           AND {task_rate} \
         ORDER BY next_run_at, id LIMIT $2 \
         FOR UPDATE OF t SKIP LOCKED) AS t LIMIT $2",
        blocked = limits::blocked_modules_sql("$1"),
        columns = task_columns!(),
        uses_limited = limits::USES_LIMITED_SQL,
        kin = KIN_COLUMNS,
        task_rate = limits::task_rate_sql("$1"),
    )
});

/// The claimed tasks' runs, one row per task, and the tasks marked running
/// on them, in one statement. The message starts empty even for a run that
/// resumes: what the task shows is this run's own (a retry that succeeds
/// does not keep the error of the run it retried).
const START_RUNS: &str = "WITH started AS ( \
        INSERT INTO runs (task_id, attempt, status, trigger, node, started_at) \
        SELECT task_id, attempt, 'running', trigger, $4, $5 \
        FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(task_id, attempt, trigger) \
        RETURNING id, task_id) \
     UPDATE tasks AS t SET status = 'running', attempts = t.attempts + 1, \
        lease_owner = $4, lease_expires_at = $6, last_run_at = $5, updated_at = $5, \
        cancel_requested = FALSE, current_run_id = started.id, pending_trigger = NULL, \
        pending_step_id = NULL, \
        progress = CASE WHEN t.resume_from_run_id IS NULL THEN 0 ELSE t.progress END, \
        message = NULL \
     FROM started WHERE t.id = started.task_id \
     RETURNING started.id, started.task_id";

/// Artifacts of resumed runs, copied into the runs resuming them.
const CARRY_ARTIFACTS: &str = "INSERT INTO artifacts (task_id, run_id, step_id, name, size, created_at, updated_at) \
     SELECT a.task_id, u.run_id, a.step_id, a.name, a.size, a.created_at, a.updated_at \
     FROM unnest($1::bigint[], $2::bigint[]) AS u(previous, run_id) \
     JOIN artifacts AS a ON a.run_id = u.previous";

/// The carried artifacts' chunks, in the order written (ids follow the
/// insertion order).
const CARRY_ARTIFACT_CHUNKS: &str = "INSERT INTO artifact_chunks (artifact_id, data) \
     SELECT carried.id, chunk.data \
     FROM unnest($1::bigint[], $2::bigint[]) AS u(previous, run_id) \
     JOIN artifacts AS resumed ON resumed.run_id = u.previous \
     JOIN artifacts AS carried ON carried.run_id = u.run_id AND carried.name = resumed.name \
     JOIN artifact_chunks AS chunk ON chunk.artifact_id = resumed.id \
     ORDER BY chunk.id";

/// The step runs of the resumed runs that the resuming runs reuse: those
/// that completed (or were reused), of steps not changed since their run
/// started (a changed step runs again: its result was made by the step as
/// it was; see migration 0008).
const REUSABLE: &str = "SELECT sr.run_id, sr.step_id, sr.result, sr.outcome, sr.module_hash, \
            sr.progress, sr.message \
     FROM step_runs AS sr JOIN runs AS r ON r.id = sr.run_id \
     WHERE sr.run_id = ANY($1) AND sr.status IN ('completed', 'reused') \
       AND NOT EXISTS (SELECT 1 FROM steps AS s \
                       WHERE s.id = sr.step_id AND s.edited_at >= r.started_at)";

const INSERT_STEP_RUNS: &str = "INSERT INTO step_runs (run_id, step_id, sort_order, controller, status, \
            result, outcome, module_hash, progress, message) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                          $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[]) \
     RETURNING id, run_id, step_id";

const PAST_DURATIONS: &str = "SELECT u.task_id, r.seconds \
     FROM unnest($1::bigint[]) AS u(task_id) \
     CROSS JOIN LATERAL (SELECT id, (finished_at - started_at)::float8 / 1000 AS seconds FROM runs \
                         WHERE task_id = u.task_id AND status = 'completed' \
                           AND finished_at IS NOT NULL \
                         ORDER BY id DESC LIMIT $2) AS r \
     ORDER BY u.task_id, r.id DESC";

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

/// A task just claimed.
struct Claimed {
    task: Task,
    shape: Shape,
    run_id: i64,
    /// It never ran before: only a claim sets `last_run_at`, and nothing
    /// clears it, so it has no checkpoints to clear and no past runs.
    first_run: bool,
}

pub(super) async fn claim_due(
    store: &PostgresStore,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<ClaimedRun>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.pool.begin().await?;
    let claimed = claim_in(&mut tx, node, now, lease_until, limit).await;
    super::settle(tx, claimed.map_err(StoreError::from)).await
}

async fn claim_in(
    tx: &mut PgConnection,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ClaimedRun>> {
    let mut ranks: Vec<i64> = Priority::ALL.iter().map(|p| p.rank()).collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    let rows = sqlx::query(&DUE_SQL)
        .bind(ms(now))
        .bind(limit)
        .bind(&ranks)
        .fetch_all(&mut *tx)
        .await
        .context("picking due tasks")?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut due = Vec::with_capacity(rows.len());
    let mut any_limited = false;
    let mut kin = Kin::default();
    for row in &rows {
        let shape = Shape {
            resume_from: row.try_get("resume_from_run_id")?,
            pending_trigger: row.try_get("pending_trigger")?,
            pending_step: row.try_get("pending_step_id")?,
        };
        let uses_limited: bool = row.try_get("uses_limited")?;
        let task = task_from_row(row)?;
        kin.note(task.id, row)?;
        due.push((task, shape));
        any_limited |= uses_limited;
    }
    // The modules' slots each admitted task takes, when any is limited.
    let mut slots_of = HashMap::new();
    if any_limited {
        let order: Vec<i64> = due.iter().map(|(t, _)| t.id).collect();
        slots_of = admit_due(tx, now, &order).await?;
        due.retain(|(t, _)| slots_of.contains_key(&t.id));
        kin.keep(|id| slots_of.contains_key(&id));
        if due.is_empty() {
            return Ok(Vec::new());
        }
    }

    let task_ids: Vec<i64> = due.iter().map(|(t, _)| t.id).collect();
    let attempts: Vec<i64> = due.iter().map(|(t, _)| t.attempts + 1).collect();
    let triggers: Vec<&str> = due.iter().map(|(_, s)| s.trigger().as_str()).collect();
    let run_rows: Vec<(i64, i64)> = sqlx::query_as(START_RUNS)
        .bind(&task_ids)
        .bind(&attempts)
        .bind(&triggers)
        .bind(node)
        .bind(ms(now))
        .bind(ms(lease_until))
        .fetch_all(&mut *tx)
        .await
        .context("starting runs")?;
    let run_of: HashMap<i64, i64> = run_rows
        .into_iter()
        .map(|(run, task)| (task, run))
        .collect();
    let run_ids: Vec<i64> = task_ids.iter().map(|id| run_of[id]).collect();
    if any_limited {
        let slots: Vec<(String, i64)> = slots_of
            .into_iter()
            .flat_map(|(task, modules)| {
                let run = run_of[&task];
                modules.into_iter().map(move |module| (module, run))
            })
            .collect();
        take_slots(tx, now, &slots).await?;
    }

    let at = time(ms(now));
    let mut shapes = Vec::with_capacity(due.len());
    let mut tasks = Vec::with_capacity(due.len());
    for ((mut task, shape), &run_id) in due.into_iter().zip(&run_ids) {
        let first_run = task.last_run_at.is_none();
        // The row as the update left it.
        task.status = TaskStatus::Running;
        task.attempts += 1;
        task.last_run_at = Some(at);
        task.updated_at = at;
        task.current_run_id = Some(run_id);
        if shape.resume_from.is_none() {
            task.progress = 0.0;
        }
        task.message = None;
        tasks.push(task);
        shapes.push((shape, run_id, first_run));
    }
    let mut sealed = load_children(tx, &mut tasks, true, &kin).await?;
    let claimed: Vec<Claimed> = tasks
        .into_iter()
        .zip(shapes)
        .map(|(task, (shape, run_id, first_run))| Claimed {
            task,
            shape,
            run_id,
            first_run,
        })
        .collect();

    let reusable = resume_and_clear(tx, &claimed).await?;
    let step_run_ids = insert_step_runs(tx, &claimed, &reusable).await?;
    let modules = modules(tx, &claimed).await?;
    let mut durations = past_durations(tx, &claimed).await?;

    Ok(claimed
        .into_iter()
        .map(|c| {
            let steps = c
                .task
                .steps
                .iter()
                .map(|step| PlannedStep {
                    step: step.clone(),
                    step_run_id: step_run_ids[&(c.run_id, step.id)],
                    status: plan(&c.shape, step, reusable.get(&c.run_id)),
                    module: modules.get(&step.controller).cloned(),
                })
                .collect();
            ClaimedRun {
                run_id: c.run_id,
                attempt: c.task.attempts,
                trigger: c.shape.trigger(),
                secrets: sealed.remove(&c.task.id).unwrap_or_default(),
                past_durations: durations.remove(&c.task.id).unwrap_or_default(),
                steps,
                task: c.task,
            }
        })
        .collect())
}

/// Runs that resume another get its artifacts and the step runs they
/// reuse (returned by new run id, then step id); fresh runs of tasks that
/// ran before start without checkpoints.
async fn resume_and_clear(
    tx: &mut PgConnection,
    claimed: &[Claimed],
) -> Result<HashMap<i64, HashMap<i64, Reusable>>> {
    let resuming: Vec<(i64, i64)> = claimed
        .iter()
        .filter_map(|c| c.shape.resumes().map(|previous| (previous, c.run_id)))
        .collect();
    let fresh: Vec<i64> = claimed
        .iter()
        .filter(|c| c.shape.resumes().is_none() && !c.first_run)
        .map(|c| c.task.id)
        .collect();
    if !fresh.is_empty() {
        sqlx::query("DELETE FROM checkpoints WHERE task_id = ANY($1)")
            .bind(&fresh)
            .execute(&mut *tx)
            .await
            .context("clearing checkpoints of fresh runs")?;
    }
    let mut reusable: HashMap<i64, HashMap<i64, Reusable>> = HashMap::new();
    if resuming.is_empty() {
        return Ok(reusable);
    }
    let previous: Vec<i64> = resuming.iter().map(|(p, _)| *p).collect();
    let runs: Vec<i64> = resuming.iter().map(|(_, r)| *r).collect();
    sqlx::query(CARRY_ARTIFACTS)
        .bind(&previous)
        .bind(&runs)
        .execute(&mut *tx)
        .await
        .context("carrying artifacts into resuming runs")?;
    sqlx::query(CARRY_ARTIFACT_CHUNKS)
        .bind(&previous)
        .bind(&runs)
        .execute(&mut *tx)
        .await
        .context("carrying artifact chunks into resuming runs")?;
    let resumed_by: HashMap<i64, i64> = resuming.iter().copied().collect();
    let rows = sqlx::query(REUSABLE)
        .bind(&previous)
        .fetch_all(&mut *tx)
        .await
        .context("loading reusable step runs")?;
    for row in &rows {
        let previous: i64 = row.try_get("run_id")?;
        reusable.entry(resumed_by[&previous]).or_default().insert(
            row.try_get("step_id")?,
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
fn plan(shape: &Shape, step: &Step, reusable: Option<&HashMap<i64, Reusable>>) -> StepRunStatus {
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
    let reused = shape.resumes().is_some() && reusable.is_some_and(|r| r.contains_key(&step.id));
    if reused {
        StepRunStatus::Reused
    } else {
        StepRunStatus::Pending
    }
}

/// Insert the step runs of every claimed run in one statement; returns
/// their ids by (run id, step id).
async fn insert_step_runs(
    tx: &mut PgConnection,
    claimed: &[Claimed],
    reusable: &HashMap<i64, HashMap<i64, Reusable>>,
) -> Result<HashMap<(i64, i64), i64>> {
    let mut run_ids = Vec::new();
    let mut step_ids = Vec::new();
    let mut sort_orders = Vec::new();
    let mut controllers = Vec::new();
    let mut statuses = Vec::new();
    let mut results = Vec::new();
    let mut outcomes = Vec::new();
    let mut hashes = Vec::new();
    let mut progresses = Vec::new();
    let mut messages = Vec::new();
    for c in claimed {
        let reusable = reusable.get(&c.run_id);
        for step in &c.task.steps {
            let status = plan(&c.shape, step, reusable);
            let copied = (status == StepRunStatus::Reused)
                .then(|| reusable.and_then(|r| r.get(&step.id)))
                .flatten();
            run_ids.push(c.run_id);
            step_ids.push(step.id);
            sort_orders.push(step.sort_order);
            controllers.push(step.controller.as_str());
            statuses.push(status.as_str());
            results.push(copied.and_then(|r| r.result.as_deref()));
            outcomes.push(copied.and_then(|r| r.outcome.as_deref()));
            hashes.push(copied.and_then(|r| r.module_hash.as_deref()));
            progresses.push(copied.map_or(0.0, |r| r.progress));
            messages.push(copied.and_then(|r| r.message.as_deref()));
        }
    }
    if run_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(INSERT_STEP_RUNS)
        .bind(&run_ids)
        .bind(&step_ids)
        .bind(&sort_orders)
        .bind(&controllers)
        .bind(&statuses)
        .bind(&results)
        .bind(&outcomes)
        .bind(&hashes)
        .bind(&progresses)
        .bind(&messages)
        .fetch_all(&mut *tx)
        .await
        .context("inserting step runs")?;
    Ok(rows
        .into_iter()
        .map(|(id, run_id, step_id)| ((run_id, step_id), id))
        .collect())
}

/// The registered modules the claimed steps name, by path.
async fn modules(tx: &mut PgConnection, claimed: &[Claimed]) -> Result<HashMap<String, ModuleRef>> {
    let mut paths: Vec<&str> = claimed
        .iter()
        .flat_map(|c| c.task.steps.iter().map(|s| s.controller.as_str()))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    if paths.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT path, hash, active FROM modules WHERE path = ANY($1)")
            .bind(&paths)
            .fetch_all(&mut *tx)
            .await
            .context("loading the claimed steps' modules")?;
    Ok(rows
        .into_iter()
        .map(|(path, hash, active)| (path, ModuleRef { hash, active }))
        .collect())
}

/// How long each claimed task's last completed runs took, newest first.
async fn past_durations(
    tx: &mut PgConnection,
    claimed: &[Claimed],
) -> Result<HashMap<i64, Vec<f64>>> {
    let ran_before: Vec<i64> = claimed
        .iter()
        .filter(|c| !c.first_run)
        .map(|c| c.task.id)
        .collect();
    let mut durations: HashMap<i64, Vec<f64>> = HashMap::new();
    if ran_before.is_empty() {
        return Ok(durations);
    }
    let rows: Vec<(i64, f64)> = sqlx::query_as(PAST_DURATIONS)
        .bind(&ran_before)
        .bind(PAST_RUNS)
        .fetch_all(&mut *tx)
        .await
        .context("loading the tasks' past run durations")?;
    for (task_id, seconds) in rows {
        durations.entry(task_id).or_default().push(seconds);
    }
    Ok(durations)
}
