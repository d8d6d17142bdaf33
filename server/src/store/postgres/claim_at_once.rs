//! A claim in one statement, committed on its own: the due tasks picked and
//! locked, their runs started, the checkpoints of fresh runs cleared, the
//! artifacts of resumed runs carried, and the step runs planned, inserted
//! and returned with their steps and modules (the steps of
//! [`super::claim`], as CTEs of one statement). An idle node's claim is then
//! one round trip instead of four (`BEGIN`, two statements, `COMMIT`), and a
//! busy node's claims hold their locks for one statement only.
//!
//! One statement cannot admit tasks by the limits (that needs the limits'
//! lock and the modules' usage first): when a picked task uses a limited
//! module, the statement starts nothing and says so, and the claim takes the
//! transaction of [`super::claim`]. The tasks' details, sealed secrets and
//! past durations are read after it, outside it; they are read-only, and a
//! change to them after the claim is a change made while the run runs.

use super::claim::{
    Claimed, MODULE_COLUMNS, bind_claim, carry_artifacts_sql, carry_chunks_sql, due_ctes,
    due_from_row, finish, mark_running, plan_ctes, planned_from_row,
};
use super::rows::{Kin, Prefixed, next_id, step_from_row};
use crate::store::{ClaimedRun, PlannedStep};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The whole claim (`$1` now, `$2` the batch size, `$3` the priorities, `$4`
/// the node, `$5` the lease's end): one row per planned step of each
/// started run, with its task's columns; the step's columns are prefixed
/// `step_`. When a picked task uses a limited module (`some_limited`),
/// nothing is started and the one row says so; when nothing is due, the one
/// row has no run.
///
/// Every relation the statement joins to another is a table, read by an
/// index, or one row (`limited`): the runs' ids are taken from the sequence
/// in `claimed`, and the step runs' in `planned`, so that no part needs the
/// `RETURNING` of another. Relations made inside a statement come with no
/// statistics, and the planner joined two of them in a nested loop,
/// quadratic in the batch (most of a claim of 64 runs).
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    let resuming = "(SELECT previous, run_id FROM claimed WHERE previous IS NOT NULL) AS u";
    format!(
        "WITH {due}, \
         limited AS MATERIALIZED ( \
            SELECT coalesce(bool_or(uses_limited), FALSE) AS some_limited FROM due), \
         claimed AS MATERIALIZED ( \
            SELECT d.*, d.id AS task_id, d.pending_step_id AS only_step, \
                   CASE WHEN d.pending_step_id IS NULL THEN d.resume_from_run_id END AS previous, \
                   d.last_run_at IS NULL AS first_run, \
                   {next_run_id} AS run_id \
            FROM due AS d WHERE NOT (SELECT some_limited FROM limited)), \
         started AS ( \
            INSERT INTO runs (id, task_id, attempt, status, trigger, node, started_at) \
            SELECT run_id, id, attempts + 1, 'running', run_trigger, $4, $1 FROM claimed), \
         marked AS (UPDATE tasks AS t SET {mark_running} FROM claimed WHERE t.id = claimed.id), \
         cleared AS (DELETE FROM checkpoints WHERE task_id IN \
            (SELECT task_id FROM claimed WHERE previous IS NULL AND NOT first_run)), \
         carried AS ({carry} RETURNING id, run_id, name), \
         carried_chunks AS ({chunks}), \
         {plan} \
         SELECT l.some_limited, p.*, p.run_id AS started_run, {MODULE_COLUMNS} \
         FROM limited AS l LEFT JOIN planned AS p ON TRUE \
         LEFT JOIN modules AS m ON m.path = p.step_controller \
         ORDER BY p.claim_order, p.next_run_at, p.id, p.step_sort_order, p.step_id",
        due = due_ctes(),
        next_run_id = next_id("'runs'"),
        mark_running = mark_running("claimed.run_id", "$4", "$1", "$5"),
        carry = carry_artifacts_sql(resuming),
        chunks = carry_chunks_sql(resuming, "carried"),
        plan = plan_ctes(),
    )
});

/// The claimed runs, or `None` when a picked task uses a limited module
/// (nothing was started; the caller claims in a transaction instead).
pub(super) async fn claim(
    conn: &mut PgConnection,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Option<Vec<ClaimedRun>>> {
    let rows = bind_claim(&CLAIM_SQL, node, now, lease_until, limit)
        .fetch_all(&mut *conn)
        .await
        .context("claiming due tasks")?;
    let Some(first) = rows.first() else {
        return Ok(Some(Vec::new()));
    };
    if first.try_get::<bool, _>("some_limited")? {
        return Ok(None);
    }
    let mut kin = Kin::default();
    let mut claimed: Vec<Claimed> = Vec::new();
    let mut planned: HashMap<i64, Vec<PlannedStep>> = HashMap::new();
    for row in &rows {
        let Some(task_id) = row.try_get::<Option<i64>, _>("id")? else {
            break; // nothing was due
        };
        // A task's rows follow each other, one per planned step.
        if claimed.last().is_none_or(|c| c.task.id != task_id) {
            let (task, shape, run) = due_from_row(row, &mut kin)?;
            let run_id = run.context("a picked task was not started")?;
            claimed.push(Claimed::started(task, shape, run_id, now));
        }
        if row.try_get::<Option<i64>, _>("step_run_id")?.is_some() {
            let step = step_from_row(&Prefixed::new("step_", row))?;
            let run_id = claimed.last().expect("pushed above").run_id;
            planned
                .entry(run_id)
                .or_default()
                .push(planned_from_row(row, step)?);
        }
    }
    finish(conn, claimed, &kin, planned).await.map(Some)
}
