//! A waited task created on an idle node and claimed for it in one statement
//! (`Store::create_and_claim`): the task goes in already running on its
//! first run, with the run and its step runs, so that its step starts
//! without the claim's own statement (on an idle node, the largest part of
//! the time from create to start: a round trip, the claim's execution and
//! the wake of the claim loop).
//!
//! The task starts only when a claim would have picked it: no task due
//! before it waits (a scheduled one due by now, of any priority, that no
//! inactive module holds back), and each of its enabled steps names a
//! registered, active module without limits (only a claim admits by
//! limits). Otherwise it goes in scheduled, exactly as a plain create puts
//! it, and the scheduler claims it. The statement commits without waiting
//! for the WAL flush, as a deferred create and a claim each do: the run's
//! end, which waits for it, makes both durable (see `deferred.rs`).

use super::PostgresStore;
use super::claim::{Claimed, Shape, planned_from_row};
use super::create_batch::{DetailRows, STEP_TYPES, StepRows, array_params};
use super::rows::{ms, next_id};
use super::tasks::{built, initial_state};
use crate::store::{
    ClaimedRun, NewTask, PlannedStep, Priority, RunTrigger, StepRunStatus, StepStatus, StoreResult,
    Task, TaskStatus,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::sync::LazyLock;

/// `$1`–`$10` the task's columns, `$11` now, `$12` the node, `$13` the
/// lease's end, `$14` the priorities' ranks, then the steps' and the
/// details' arrays (their task's place, always 1, first). One row per step,
/// in the order given: the ids of the task and of its run (NULL when it did
/// not start), the step's, its step run's, its plan and its module. The
/// `OFFSET 0` keeps the look at a due task's modules a lookup of its own
/// steps (see `uses_limited_sql` in `store/limits.rs`).
static CREATE_AND_CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {relaxed}, \
         step_rows AS MATERIALIZED ( \
            SELECT u.*, {next_step_id} AS id \
            FROM relaxed CROSS JOIN unnest({steps}) WITH ORDINALITY AS u(task_place, sort_order, \
                   controller, settings, max_execution_time, max_memory, interrupt_on_step_fault, \
                   status, place)), \
         modules_of AS MATERIALIZED ( \
            SELECT s.place, m.hash, m.active, \
                   (m.max_running IS NOT NULL OR m.max_starts_per_minute IS NOT NULL) AS limited \
            FROM step_rows AS s LEFT JOIN modules AS m ON m.path = s.controller), \
         go AS MATERIALIZED ( \
            SELECT NOT EXISTS ( \
                     SELECT 1 FROM unnest($14::bigint[]) AS p(rank) \
                     CROSS JOIN LATERAL (SELECT 1 FROM tasks AS t \
                       WHERE status = 'scheduled' AND priority = p.rank AND next_run_at <= $11 \
                         AND NOT EXISTS (SELECT 1 FROM steps AS s JOIN modules AS m \
                                           ON m.path = s.controller \
                                         WHERE s.task_id = t.id AND s.status = 'scheduled' \
                                           AND NOT m.active OFFSET 0) \
                       LIMIT 1) AS due) \
               AND NOT EXISTS ( \
                     SELECT 1 FROM step_rows AS s JOIN modules_of AS m ON m.place = s.place \
                     WHERE s.status = '{enabled}' \
                       AND (m.hash IS NULL OR NOT m.active OR m.limited)) AS starts), \
         ids AS MATERIALIZED ( \
            SELECT {next_task_id} AS task_id, \
                   CASE WHEN starts THEN {next_run_id} END AS run_id \
            FROM go), \
         new_task AS ( \
            INSERT INTO tasks (id, name, status, priority, start_at, run_interval, \
                   max_execution_time, max_attempts, next_run_at, created_by, timezone, hook_url, \
                   created_at, updated_at, attempts, last_run_at, current_run_id, lease_owner, \
                   lease_expires_at) \
            SELECT task_id, $1, CASE WHEN run_id IS NULL THEN '{scheduled}' ELSE '{running}' END, \
                   $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, \
                   CASE WHEN run_id IS NULL THEN 0 ELSE 1 END, \
                   CASE WHEN run_id IS NOT NULL THEN $11::bigint END, run_id, \
                   CASE WHEN run_id IS NOT NULL THEN $12::text END, \
                   CASE WHEN run_id IS NOT NULL THEN $13::bigint END \
            FROM ids), \
         new_steps AS ( \
            INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
                   max_memory, interrupt_on_step_fault, status) \
            SELECT s.id, i.task_id, s.sort_order, s.controller, s.settings, s.max_execution_time, \
                   s.max_memory, s.interrupt_on_step_fault, s.status \
            FROM step_rows AS s CROSS JOIN ids AS i), \
         new_details AS ( \
            INSERT INTO task_details (task_id, key, value) \
            SELECT i.task_id, u.key, u.value \
            FROM unnest({details}) AS u(task_place, key, value) CROSS JOIN ids AS i), \
         new_run AS ( \
            INSERT INTO runs (id, task_id, attempt, status, trigger, node, started_at) \
            SELECT run_id, task_id, 1, 'running', '{trigger}', $12, $11 FROM ids \
            WHERE run_id IS NOT NULL), \
         planned AS MATERIALIZED ( \
            SELECT s.place, s.id AS step_id, s.sort_order, s.controller, i.run_id, \
                   CASE WHEN s.status = '{disabled}' THEN '{skipped}' ELSE '{pending}' END AS plan, \
                   CASE WHEN i.run_id IS NOT NULL \
                        THEN {next_step_run_id} END AS step_run_id \
            FROM step_rows AS s CROSS JOIN ids AS i), \
         new_step_runs AS ( \
            INSERT INTO step_runs (id, run_id, step_id, sort_order, controller, status) \
            SELECT step_run_id, run_id, step_id, sort_order, controller, plan FROM planned \
            WHERE run_id IS NOT NULL) \
         SELECT i.task_id, i.run_id, p.step_id, p.step_run_id, p.plan, \
                m.hash AS module_hash, m.active AS module_active, m.limited AS module_limited \
         FROM ids AS i CROSS JOIN planned AS p JOIN modules_of AS m ON m.place = p.place \
         ORDER BY p.place",
        relaxed = super::deferred::RELAXED_CTE,
        next_task_id = next_id("'tasks'"),
        next_step_id = next_id("'steps'"),
        next_run_id = next_id("'runs'"),
        next_step_run_id = next_id("'step_runs'"),
        steps = array_params(15, &STEP_TYPES[1..]),
        details = array_params(15 + STEP_TYPES.len() - 1, &["bigint", "text", "text"]),
        enabled = StepStatus::Scheduled.as_str(),
        disabled = StepStatus::Disabled.as_str(),
        scheduled = TaskStatus::Scheduled.as_str(),
        running = TaskStatus::Running.as_str(),
        trigger = RunTrigger::Schedule.as_str(),
        skipped = StepRunStatus::Skipped.as_str(),
        pending = StepRunStatus::Pending.as_str(),
    )
});

pub(super) async fn create_and_claim(
    store: &PostgresStore,
    new: NewTask,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> StoreResult<(Task, Option<ClaimedRun>)> {
    debug_assert!(new.starts_at_create(now), "only plain tasks due now");
    let (initial, next_run_at) = initial_state(&new, now);
    let mut ranks: Vec<i64> = Priority::ALL.iter().map(|p| p.rank()).collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    let rows = {
        let place = [(1, &new)];
        let steps = StepRows::new(&place, &[]);
        let details = DetailRows::new(&place);
        let query = sqlx::query(&CREATE_AND_CLAIM_SQL)
            .bind(&new.name)
            .bind(new.priority.rank())
            .bind(new.start_at.map(ms))
            .bind(new.run_interval)
            .bind(new.max_execution_time)
            .bind(new.max_attempts)
            .bind(next_run_at.map(ms))
            .bind(new.created_by.as_deref())
            .bind(&new.timezone)
            .bind(new.hook_url.as_deref())
            .bind(ms(now))
            .bind(node)
            .bind(ms(lease_until))
            .bind(&ranks);
        let mut conn = store.hot.small_creates.acquire().await?;
        let rows = details
            .bind(steps.bind_all_but_ids(query))
            .fetch_all(&mut *conn)
            .await
            .context("creating a task and claiming it")?;
        store.deferred.committed();
        rows
    };
    let first = rows.first().context("a created task has steps")?;
    let task_id: i64 = first.try_get("task_id").context("reading the task id")?;
    let run_id: Option<i64> = first.try_get("run_id").context("reading the run id")?;
    let step_ids = rows
        .iter()
        .map(|row| row.try_get("step_id"))
        .collect::<Result<Vec<i64>, _>>()
        .context("reading the step ids")?;
    let task = built(task_id, new, step_ids, initial, next_run_at, now);
    let Some(run_id) = run_id else {
        return Ok((task, None));
    };
    // In the claim's order, which is the task's (see `built`).
    let mut steps = rows
        .iter()
        .map(|row| {
            let id: i64 = row.try_get("step_id")?;
            let step = task.steps.iter().find(|step| step.id == id).cloned();
            planned_from_row(row, step.context("a created step per row")?)
        })
        .collect::<anyhow::Result<Vec<PlannedStep>>>()?;
    steps.sort_by_key(|planned| (planned.step.sort_order, planned.step.id));
    let claimed = Claimed::started(task, Shape::fresh(), run_id, now);
    let task = claimed.task;
    Ok((
        task.clone(),
        Some(ClaimedRun {
            run_id,
            attempt: task.attempts,
            trigger: RunTrigger::Schedule,
            steps,
            secrets: Vec::new(),
            past_durations: Vec::new(),
            task,
        }),
    ))
}
