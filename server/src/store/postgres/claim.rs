//! Claiming due tasks: a fixed number of statements per batch whatever its
//! size (rows travel as arrays, `unnest`ed). Usually the whole claim is one
//! statement (`claim_at_once.rs`, built from this module's parts); when a
//! picked task uses a limited module, it is this transaction:
//!
//! 1. the due tasks are picked and locked, in claim order, with
//!    `FOR UPDATE SKIP LOCKED`: a task another node is claiming (or a user
//!    is changing) right now is passed over, so two nodes claiming at once
//!    never take the same task and never wait for each other; in the same
//!    statement their runs are inserted and the tasks marked running on
//!    them (those that use a limited module get theirs once the limits
//!    admit them);
//! 2. their details and sealed secrets are read (only for tasks that have
//!    any); artifacts are carried into resuming runs and checkpoints of
//!    fresh runs cleared;
//! 3. the step runs are planned, inserted and read back with their steps
//!    and controllers' modules in one statement; the tasks' recent run
//!    durations are read, so the executor reads nothing per run.

use super::PostgresStore;
use super::limits::{admit_due, take_slots};
use super::rows::{
    KIN_COLUMNS, Kin, Prefixed, STEP_COLUMNS, load_kin, ms, next_id, parse, prefixed_columns,
    step_from_row, task_columns, task_from_row, time,
};
use crate::store::limits;
use crate::store::{
    ClaimedRun, ModuleRef, PlannedStep, Priority, RunTrigger, Step, StepRunStatus, StepStatus,
    StoreError, StoreResult, Task, TaskStatus,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// The due tasks in claim order, locked (see the module docs), and the runs
/// of those that use no limited module started, in one statement (`$1` now,
/// `$2` the batch size, `$3` the priorities, `$4` the node, `$5` the lease's
/// end). A task that uses a limited module comes back without a run
/// (`started_run` NULL): whether it may start is decided after the limits'
/// lock is taken ([`admit_due`]).
///
/// The due tasks: for each priority in `$3` (highest first), one range of
/// the `tasks_due` index (`priority = rank`, due by `$1`), until `$2` are
/// taken. One `ORDER BY priority DESC, …` over all priorities would instead
/// walk past every not-yet-due task of a higher priority (a million
/// high-priority tasks due tomorrow would make every claim read a million
/// entries), as SQLite's claim says. The lateral join reads the priorities
/// in the array's order and stops pulling (and locking) rows once `$2` are
/// taken. Tasks that a concurrency or rate limit holds back are passed over
/// (see [`crate::store::limits`]); the full modules are a MATERIALIZED CTE,
/// worked out once per claim: inlined, the planner may work them out again
/// for every task it looks at. Whether any module is deactivated or limited
/// at all is another (`held`, one row): when none is, each due task's
/// conditions on its modules are true at once, without the walks of its
/// steps and their modules (PostgreSQL evaluates `OR` and `AND` left to right
/// and stops at the first that decides, and a CTE no row reads is never
/// worked out), as SQLite's claim does with two statements. When one is,
/// those walks look up each due task's own steps, never every step of every
/// task (see [`limits::uses_limited_sql`] on its fence).
///
/// The claim's transaction commits without waiting for its WAL to reach the
/// disk (`synchronous_commit` off for this transaction only, set by the
/// `relaxed` CTE, which saves a round trip for a `SET LOCAL`). Nothing is
/// lost by it: PostgreSQL writes its WAL in order, so the claim is durable
/// as soon as any later synchronous commit is (a step's end, the run's end,
/// which do wait); if the server crashes before that, the task is simply
/// still scheduled and is claimed again, and the run's writes that follow
/// find no run and apply nothing. SQLite's claims do the same (see
/// `sqlite/turn.rs`). An idle node's claim then costs no WAL flush, which
/// would otherwise delay every step's start.
static DUE_AND_START_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {due}, {started} \
         SELECT d.*, s.id AS started_run FROM due AS d LEFT JOIN started AS s ON s.task_id = d.id \
         ORDER BY d.claim_order, d.next_run_at, d.id",
        due = due_ctes(),
        started = started_ctes(),
    )
});

/// The CTEs `held`, `blocked`, `relaxed` and `due` of a claim (see
/// [`DUE_AND_START_SQL`]): the due tasks in claim order, locked, with what
/// decides their runs' shape.
pub(super) fn due_ctes() -> String {
    format!(
        "held AS MATERIALIZED ({held} AS modules_held), \
         blocked AS MATERIALIZED ({blocked}), {relaxed}, \
         due AS (SELECT p.ord AS claim_order, t.* \
            FROM relaxed CROSS JOIN unnest($3::bigint[]) WITH ORDINALITY AS p(rank, ord) \
            CROSS JOIN LATERAL (SELECT {columns}, resume_from_run_id, pending_step_id, \
                {trigger} AS run_trigger, \
                ((SELECT modules_held FROM held) AND {uses_limited}) AS uses_limited, {kin} \
              FROM tasks AS t \
              WHERE status = 'scheduled' AND priority = p.rank AND next_run_at <= $1 \
                AND (NOT (SELECT modules_held FROM held) OR {not_held}) \
                AND {task_rate} \
              ORDER BY next_run_at, id LIMIT $2 \
              FOR UPDATE OF t SKIP LOCKED) AS t \
            LIMIT $2)",
        held = limits::MODULES_HELD_SQL,
        blocked = limits::blocked_modules_sql("$1"),
        not_held = limits::not_held_by_modules_sql("OFFSET 0"),
        relaxed = super::deferred::RELAXED_CTE,
        columns = task_columns!(),
        uses_limited = limits::uses_limited_sql("OFFSET 0"),
        kin = KIN_COLUMNS,
        task_rate = limits::task_rate_sql("$1"),
        trigger = Shape::trigger_sql(),
    )
}

/// The CTEs `started` (`id, task_id`: the runs inserted for the due tasks
/// that do not use a limited module) and `marked` (those tasks marked
/// running).
fn started_ctes() -> String {
    format!(
        "started AS ( \
            INSERT INTO runs (task_id, attempt, status, trigger, node, started_at) \
            SELECT id, attempts + 1, 'running', run_trigger, $4, $1 FROM due \
            WHERE NOT uses_limited \
            RETURNING id, task_id), \
         marked AS (UPDATE tasks AS t SET {mark_running} FROM started WHERE t.id = started.task_id)",
        mark_running = mark_running("started.id", "$4", "$1", "$5"),
    )
}

/// The runs of admitted tasks that use a limited module, one row per task,
/// and the tasks marked running on them, in one statement.
static START_RUNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH started AS ( \
            INSERT INTO runs (task_id, attempt, status, trigger, node, started_at) \
            SELECT task_id, attempt, 'running', trigger, $4, $5 \
            FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(task_id, attempt, trigger) \
            RETURNING id, task_id) \
         UPDATE tasks AS t SET {mark_running} FROM started WHERE t.id = started.task_id \
         RETURNING started.id, started.task_id",
        mark_running = mark_running("started.id", "$4", "$5", "$6"),
    )
});

/// How a claimed task is marked running on its run `run`. The message
/// starts empty even for a run that resumes: what the task shows is this
/// run's own (a retry that succeeds does not keep the error of the run it
/// retried).
pub(super) fn mark_running(run: &str, node: &str, now: &str, lease_until: &str) -> String {
    format!(
        "status = 'running', attempts = t.attempts + 1, lease_owner = {node}, \
         lease_expires_at = {lease_until}, last_run_at = {now}, updated_at = {now}, \
         cancel_requested = FALSE, current_run_id = {run}, pending_trigger = NULL, \
         pending_step_id = NULL, \
         progress = CASE WHEN t.resume_from_run_id IS NULL THEN 0 ELSE t.progress END, \
         message = NULL"
    )
}

/// Artifacts of resumed runs, copied into the runs resuming them; `resuming`
/// is a relation `u(previous, run_id)`.
pub(super) fn carry_artifacts_sql(resuming: &str) -> String {
    format!(
        "INSERT INTO artifacts (task_id, run_id, step_id, name, size, created_at, updated_at) \
         SELECT a.task_id, u.run_id, a.step_id, a.name, a.size, a.created_at, a.updated_at \
         FROM {resuming} JOIN artifacts AS a ON a.run_id = u.previous"
    )
}

/// The carried artifacts' chunks, in the order written (ids follow the
/// insertion order); `carried` holds the carried artifacts' rows (`id,
/// run_id, name`): the table after [`carry_artifacts_sql`] ran, or its
/// `RETURNING` within one statement.
pub(super) fn carry_chunks_sql(resuming: &str, carried: &str) -> String {
    format!(
        "INSERT INTO artifact_chunks (artifact_id, data) \
         SELECT carried.id, chunk.data \
         FROM {resuming} \
         JOIN artifacts AS resumed ON resumed.run_id = u.previous \
         JOIN {carried} AS carried ON carried.run_id = u.run_id AND carried.name = resumed.name \
         JOIN artifact_chunks AS chunk ON chunk.artifact_id = resumed.id \
         ORDER BY chunk.id"
    )
}

/// The resuming runs of the transaction's claim: `$1` the runs they resume, `$2` their ids.
const RESUMING: &str = "unnest($1::bigint[], $2::bigint[]) AS u(previous, run_id)";
static CARRY_ARTIFACTS: LazyLock<String> = LazyLock::new(|| carry_artifacts_sql(RESUMING));
static CARRY_ARTIFACT_CHUNKS: LazyLock<String> =
    LazyLock::new(|| carry_chunks_sql(RESUMING, "artifacts"));

/// The claimed runs' step runs, planned, inserted and returned with their
/// steps and their controllers' modules, in one statement (`$1` the runs,
/// `$2` their tasks, `$3` the one step a single-step run runs, `$4` the run
/// a resuming run continues); see [`plan_ctes`].
static PLAN_STEP_RUNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH claimed AS ( \
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) \
              AS c(run_id, task_id, only_step, previous)), \
         {plan} \
         SELECT p.*, {MODULE_COLUMNS} \
         FROM planned AS p LEFT JOIN modules AS m ON m.path = p.step_controller \
         WHERE p.step_run_id IS NOT NULL \
         ORDER BY p.run_id, p.step_sort_order, p.step_id",
        plan = plan_ctes(),
    )
});

/// What a claim reads of a planned step's module `m` (see [`planned_from_row`]).
pub(super) const MODULE_COLUMNS: &str = "m.hash AS module_hash, m.active AS module_active, \
     (m.max_running IS NOT NULL OR m.max_starts_per_minute IS NOT NULL) AS module_limited";

/// The CTEs `reusable`, `planned` and `inserted` over a relation `claimed`
/// with at least the columns `run_id, task_id, only_step, previous`.
///
/// `planned` is each claimed row with each of its task's steps (columns
/// prefixed `step_`, read through [`Prefixed`]), the step run's `plan` and
/// its id `step_run_id`, taken from the sequence here, so that what the
/// statement returns is read from `planned` alone: joined to `inserted`'s
/// `RETURNING`, two relations the planner knows nothing about would be
/// joined in a nested loop, quadratic in the batch. A task without steps
/// keeps one row, with no step and no step run. `inserted` inserts the step
/// runs. A step run is
/// - `skipped` for a disabled step, and for every step but the one of a
///   single-step run;
/// - `reused`, with the result, outcome, module and progress copied, when
///   the run resumes one whose step run completed (or was reused) and the
///   step was not changed since that run started (a changed step runs
///   again: its result was made by the step as it was; see migration 0008);
/// - `pending` otherwise.
///
/// Steps and reusable step runs are read per claimed run (`LATERAL`), by
/// their indexes: joined as sets, the planner may scan the whole tables
/// (a claim of 64 runs took 10 ms once `step_runs` held 25,000 rows). Each
/// `LATERAL` subquery ends with `OFFSET 0`, which keeps PostgreSQL from
/// pulling it up into such a join: with many tasks queued, a generic plan
/// expects hundreds of claimed runs and hashes every step of every task.
pub(super) fn plan_ctes() -> String {
    format!(
        "reusable AS ( \
            SELECT c.run_id, ru.* FROM claimed AS c \
            CROSS JOIN LATERAL ( \
              SELECT sr.step_id, sr.result, sr.outcome, sr.module_hash, sr.progress, sr.message \
              FROM step_runs AS sr JOIN runs AS r ON r.id = sr.run_id \
              WHERE sr.run_id = c.previous AND sr.status IN ('completed', 'reused') \
                AND NOT EXISTS (SELECT 1 FROM steps AS s \
                                WHERE s.id = sr.step_id AND s.edited_at >= r.started_at) \
              OFFSET 0) AS ru \
            WHERE c.previous IS NOT NULL), \
         planned AS MATERIALIZED ( \
            SELECT c.*, {s_columns}, ru.result AS reused_result, ru.outcome AS reused_outcome, \
                   ru.module_hash AS reused_module_hash, ru.progress AS reused_progress, \
                   ru.message AS reused_message, \
                   CASE WHEN s.status = '{disabled}' THEN '{skipped}' \
                        WHEN c.only_step IS NOT NULL \
                          THEN CASE WHEN s.id = c.only_step THEN '{pending}' ELSE '{skipped}' END \
                        WHEN ru.step_id IS NOT NULL THEN '{reused}' \
                        ELSE '{pending}' END AS plan, \
                   CASE WHEN s.id IS NOT NULL \
                        THEN {next_step_run_id} END AS step_run_id \
            FROM claimed AS c \
            LEFT JOIN LATERAL (SELECT {STEP_COLUMNS} FROM steps WHERE task_id = c.task_id \
                               OFFSET 0) AS s \
              ON TRUE \
            LEFT JOIN reusable AS ru ON ru.run_id = c.run_id AND ru.step_id = s.id), \
         inserted AS ( \
            INSERT INTO step_runs (id, run_id, step_id, sort_order, controller, status, result, \
                   outcome, module_hash, progress, message) \
            SELECT step_run_id, run_id, step_id, step_sort_order, step_controller, plan, \
                   CASE WHEN plan = '{reused}' THEN reused_result END, \
                   CASE WHEN plan = '{reused}' THEN reused_outcome END, \
                   CASE WHEN plan = '{reused}' THEN reused_module_hash END, \
                   CASE WHEN plan = '{reused}' THEN reused_progress ELSE 0 END, \
                   CASE WHEN plan = '{reused}' THEN reused_message END \
            FROM planned WHERE step_run_id IS NOT NULL)",
        s_columns = prefixed_columns(STEP_COLUMNS, "s.", "step_"),
        next_step_run_id = next_id("'step_runs'"),
        disabled = StepStatus::Disabled.as_str(),
        skipped = StepRunStatus::Skipped.as_str(),
        pending = StepRunStatus::Pending.as_str(),
        reused = StepRunStatus::Reused.as_str(),
    )
}

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
pub(super) struct Shape {
    resume_from: Option<i64>,
    pending_step: Option<i64>,
    trigger: RunTrigger,
}

impl Shape {
    /// Why a due task runs, from its row's columns: a single step asked
    /// for, a run asked for, a retry (it resumes a run), or its schedule.
    pub(super) fn trigger_sql() -> String {
        format!(
            "CASE WHEN pending_step_id IS NOT NULL THEN '{step}' \
                  WHEN pending_trigger = '{manual}' THEN '{manual}' \
                  WHEN resume_from_run_id IS NOT NULL THEN '{retry}' \
                  ELSE '{schedule}' END",
            step = RunTrigger::Step.as_str(),
            manual = RunTrigger::Manual.as_str(),
            retry = RunTrigger::Retry.as_str(),
            schedule = RunTrigger::Schedule.as_str(),
        )
    }

    /// A task's first run, on its schedule: what a new task's claim has.
    pub(super) fn fresh() -> Self {
        Shape {
            resume_from: None,
            pending_step: None,
            trigger: RunTrigger::Schedule,
        }
    }

    /// The run this one continues: not for a single-step run.
    fn resumes(&self) -> Option<i64> {
        self.resume_from.filter(|_| self.pending_step.is_none())
    }
}

/// A task just claimed.
pub(super) struct Claimed {
    pub(super) task: Task,
    shape: Shape,
    pub(super) run_id: i64,
    /// It never ran before: only a claim sets `last_run_at`, and nothing
    /// clears it, so it has no checkpoints to clear and no past runs.
    first_run: bool,
}

/// Claim a batch: in one statement when no picked task uses a limited
/// module ([`super::claim_at_once`]), else in a transaction that admits
/// those by the limits ([`claim_in`]).
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
    let mut conn = store.hot.claims.acquire().await?;
    if let Some(claimed) =
        super::claim_at_once::claim(&mut conn, node, now, lease_until, limit).await?
    {
        return Ok(claimed);
    }
    drop(conn);
    let mut tx = store.hot.claims.begin().await?;
    let claimed = claim_in(&mut tx, node, now, lease_until, limit).await;
    super::settle(tx, claimed.map_err(StoreError::from)).await
}

/// A claim statement built on [`due_ctes`] and [`started_ctes`], bound to
/// their parameters: `$1` now, `$2` the batch size, `$3` the priorities'
/// ranks (highest first), `$4` the node, `$5` the lease's end.
pub(super) fn bind_claim<'q>(
    sql: &'q str,
    node: &'q str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut ranks: Vec<i64> = Priority::ALL.iter().map(|p| p.rank()).collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    sqlx::query(sql)
        .bind(ms(now))
        .bind(limit)
        .bind(ranks)
        .bind(node)
        .bind(ms(lease_until))
}

/// A due task's row ([`due_ctes`]): the task as read, what shapes its run,
/// and the run started for it (`started_run`, if any); notes its kin.
pub(super) fn due_from_row(row: &PgRow, kin: &mut Kin) -> Result<(Task, Shape, Option<i64>)> {
    let shape = Shape {
        resume_from: row.try_get("resume_from_run_id")?,
        pending_step: row.try_get("pending_step_id")?,
        trigger: parse(row.try_get("run_trigger")?)?,
    };
    let run: Option<i64> = row.try_get("started_run")?;
    let task = task_from_row(row)?;
    kin.note(task.id, row)?;
    Ok((task, shape, run))
}

async fn claim_in(
    tx: &mut PgConnection,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ClaimedRun>> {
    let rows = bind_claim(&DUE_AND_START_SQL, node, now, lease_until, limit)
        .fetch_all(&mut *tx)
        .await
        .context("picking due tasks and starting their runs")?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut due = Vec::with_capacity(rows.len());
    let mut kin = Kin::default();
    for row in &rows {
        due.push(due_from_row(row, &mut kin)?);
    }
    start_limited(tx, node, now, lease_until, &mut due, &mut kin).await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let claimed: Vec<Claimed> = due
        .into_iter()
        .map(|(task, shape, run)| {
            Claimed::started(
                task,
                shape,
                run.expect("every admitted task has a run"),
                now,
            )
        })
        .collect();
    resume_and_clear(tx, &claimed).await?;
    let planned = plan_step_runs(tx, &claimed).await?;
    finish(tx, claimed, &kin, planned).await
}

impl Claimed {
    /// A picked task started on `run_id` at `now`: the row as the claim's
    /// update left it.
    pub(super) fn started(mut task: Task, shape: Shape, run_id: i64, now: DateTime<Utc>) -> Self {
        let at = time(ms(now));
        let first_run = task.last_run_at.is_none();
        task.status = TaskStatus::Running;
        task.attempts += 1;
        task.last_run_at = Some(at);
        task.updated_at = at;
        task.current_run_id = Some(run_id);
        if shape.resume_from.is_none() {
            task.progress = 0.0;
        }
        task.message = None;
        Claimed {
            task,
            shape,
            run_id,
            first_run,
        }
    }
}

/// The claimed runs with their planned steps, the tasks' details and sealed
/// secrets (for those `kin` names) and their past runs' durations read.
pub(super) async fn finish(
    conn: &mut PgConnection,
    claimed: Vec<Claimed>,
    kin: &Kin,
    mut planned: HashMap<i64, Vec<PlannedStep>>,
) -> Result<Vec<ClaimedRun>> {
    let mut durations = past_durations(conn, &claimed).await?;
    let (mut tasks, shapes): (Vec<Task>, Vec<(Shape, i64)>) = claimed
        .into_iter()
        .map(|c| (c.task, (c.shape, c.run_id)))
        .unzip();
    let mut sealed = load_kin(conn, &mut tasks, true, kin).await?;
    Ok(tasks
        .into_iter()
        .zip(shapes)
        .map(|(mut task, (shape, run_id))| {
            let steps = planned.remove(&run_id).unwrap_or_default();
            task.steps = steps.iter().map(|planned| planned.step.clone()).collect();
            ClaimedRun {
                run_id,
                attempt: task.attempts,
                trigger: shape.trigger,
                secrets: sealed.remove(&task.id).unwrap_or_default(),
                past_durations: durations.remove(&task.id).unwrap_or_default(),
                steps,
                task,
            }
        })
        .collect())
}

/// The picked tasks that use a limited module (those without a run yet):
/// the ones the limits admit get their runs and slots, the others are
/// dropped from `due` (their locks go with the transaction).
async fn start_limited(
    tx: &mut PgConnection,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    due: &mut Vec<(Task, Shape, Option<i64>)>,
    kin: &mut Kin,
) -> Result<()> {
    let order: Vec<i64> = due
        .iter()
        .filter(|(_, _, run)| run.is_none())
        .map(|(t, _, _)| t.id)
        .collect();
    if order.is_empty() {
        return Ok(());
    }
    let slots_of = admit_due(tx, now, &order).await?;
    due.retain(|(t, _, run)| run.is_some() || slots_of.contains_key(&t.id));
    let kept: HashSet<i64> = due.iter().map(|(t, _, _)| t.id).collect();
    kin.keep(|id| kept.contains(&id));
    let admitted: Vec<&(Task, Shape, Option<i64>)> =
        due.iter().filter(|(_, _, run)| run.is_none()).collect();
    if admitted.is_empty() {
        return Ok(());
    }
    let task_ids: Vec<i64> = admitted.iter().map(|(t, _, _)| t.id).collect();
    let attempts: Vec<i64> = admitted.iter().map(|(t, _, _)| t.attempts + 1).collect();
    let triggers: Vec<&str> = admitted
        .iter()
        .map(|(_, s, _)| s.trigger.as_str())
        .collect();
    let run_rows: Vec<(i64, i64)> = sqlx::query_as(&START_RUNS)
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
    for (task, _, run) in due.iter_mut() {
        if run.is_none() {
            *run = Some(run_of[&task.id]);
        }
    }
    let slots: Vec<(String, i64)> = slots_of
        .into_iter()
        .flat_map(|(task, modules)| {
            let run = run_of[&task];
            modules.into_iter().map(move |module| (module, run))
        })
        .collect();
    take_slots(tx, now, &slots).await
}

/// Runs that resume another get its artifacts; fresh runs of tasks that
/// ran before start without checkpoints.
async fn resume_and_clear(tx: &mut PgConnection, claimed: &[Claimed]) -> Result<()> {
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
    if resuming.is_empty() {
        return Ok(());
    }
    let previous: Vec<i64> = resuming.iter().map(|(p, _)| *p).collect();
    let runs: Vec<i64> = resuming.iter().map(|(_, r)| *r).collect();
    sqlx::query(&CARRY_ARTIFACTS)
        .bind(&previous)
        .bind(&runs)
        .execute(&mut *tx)
        .await
        .context("carrying artifacts into resuming runs")?;
    sqlx::query(&CARRY_ARTIFACT_CHUNKS)
        .bind(&previous)
        .bind(&runs)
        .execute(&mut *tx)
        .await
        .context("carrying artifact chunks into resuming runs")?;
    Ok(())
}

/// The step runs of every claimed run, in one statement
/// ([`PLAN_STEP_RUNS`]): by run id, each run's steps in order.
async fn plan_step_runs(
    tx: &mut PgConnection,
    claimed: &[Claimed],
) -> Result<HashMap<i64, Vec<PlannedStep>>> {
    let runs: Vec<i64> = claimed.iter().map(|c| c.run_id).collect();
    let tasks: Vec<i64> = claimed.iter().map(|c| c.task.id).collect();
    let only_steps: Vec<Option<i64>> = claimed.iter().map(|c| c.shape.pending_step).collect();
    let previous: Vec<Option<i64>> = claimed.iter().map(|c| c.shape.resumes()).collect();
    let rows = sqlx::query(&PLAN_STEP_RUNS)
        .bind(&runs)
        .bind(&tasks)
        .bind(&only_steps)
        .bind(&previous)
        .fetch_all(&mut *tx)
        .await
        .context("inserting step runs")?;
    let mut planned: HashMap<i64, Vec<PlannedStep>> = HashMap::new();
    for row in &rows {
        planned
            .entry(row.try_get("run_id")?)
            .or_default()
            .push(planned_from_row(
                row,
                step_from_row(&Prefixed::new("step_", row))?,
            )?);
    }
    Ok(planned)
}

/// A planned step's row: `step` read from it, and its columns `step_run_id`,
/// `plan` and [`MODULE_COLUMNS`].
pub(super) fn planned_from_row(row: &PgRow, step: Step) -> Result<PlannedStep> {
    let hash: Option<String> = row.try_get("module_hash")?;
    let active: Option<bool> = row.try_get("module_active")?;
    let limited: Option<bool> = row.try_get("module_limited")?;
    Ok(PlannedStep {
        step,
        step_run_id: row.try_get("step_run_id")?,
        status: parse(row.try_get("plan")?)?,
        module: hash.zip(active).map(|(hash, active)| ModuleRef {
            hash,
            active,
            limited: limited.unwrap_or(false),
        }),
    })
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
