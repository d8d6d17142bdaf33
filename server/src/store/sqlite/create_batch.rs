//! New tasks (no code to upsert) inserted set-based: one statement each for
//! the tasks, their steps and their details, whatever the batch size. The
//! API group-commits concurrent creates into batches of hundreds; a loop of
//! per-task statements made every create a few round trips to the writer.
//!
//! Ids are assigned here, inside the write transaction (the only writer):
//! tasks and steps continue their `AUTOINCREMENT` sequences (inserting an id
//! above a sequence moves it up, so no id is handed out twice). That ties
//! each step and detail row to its task without reading ids back.

use super::counts::TaskMoves;
use super::rows::{json_text, ms, opt_ms};
use super::tasks::{built, initial_state, insert_secret};
use crate::store::{NewTask, StoreResult, Task, TaskStatus};
use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnection;

/// The ids of the first task and first step of a batch: the `AUTOINCREMENT`
/// sequences continued.
const NEXT_IDS_SQL: &str = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0) + 1, \
            COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'steps'), 0) + 1";

/// `?1` the rows as a JSON array, `?2` now.
const INSERT_TASKS_SQL: &str = "INSERT INTO tasks (id, name, status, priority, start_at, run_interval, max_execution_time, \
            max_attempts, next_run_at, created_by, cron, timezone, hook_url, max_starts_per_minute, \
            created_at, updated_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
            value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
            value ->> 12, value ->> 13, ?2, ?2 FROM json_each(?1)";

const INSERT_STEPS_SQL: &str = "INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
            max_memory, interrupt_on_step_fault, status) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
            value ->> 6, value ->> 7, value ->> 8 FROM json_each(?1)";

const INSERT_DETAILS_SQL: &str = "INSERT INTO task_details (task_id, key, value) \
     SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1)";

/// A batch's rows, each kind as one JSON array (bound to one statement), and
/// what the built tasks need besides their [`NewTask`]s.
struct Rows {
    tasks: String,
    steps: Option<String>,
    details: Option<String>,
    step_ids: Vec<Vec<i64>>,
    states: Vec<(TaskStatus, Option<DateTime<Utc>>)>,
}

impl Rows {
    fn new(tasks: &[NewTask], first_task: i64, first_step: i64, now: DateTime<Utc>) -> Rows {
        let mut task_rows = Vec::with_capacity(tasks.len());
        let mut step_rows = Vec::new();
        let mut detail_rows = Vec::new();
        let mut step_ids = Vec::with_capacity(tasks.len());
        let mut states = Vec::with_capacity(tasks.len());
        let mut next_step = first_step;
        for (id, new) in (first_task..).zip(tasks) {
            let (initial, next_run_at) = initial_state(new, now);
            states.push((initial, next_run_at));
            task_rows.push(json!([
                id,
                new.name,
                initial.as_str(),
                new.priority.rank(),
                opt_ms(new.start_at),
                new.run_interval,
                new.max_execution_time,
                new.max_attempts,
                opt_ms(next_run_at),
                new.created_by,
                new.cron,
                new.timezone,
                new.hook_url,
                new.max_starts_per_minute,
            ]));
            let mut ids = Vec::with_capacity(new.steps.len());
            for step in &new.steps {
                step_rows.push(json!([
                    next_step,
                    id,
                    step.sort_order,
                    step.controller,
                    json_text(&step.settings),
                    step.max_execution_time,
                    step.max_memory,
                    step.interrupt_on_step_fault,
                    step.status.as_str(),
                ]));
                ids.push(next_step);
                next_step += 1;
            }
            step_ids.push(ids);
            for (key, value) in &new.details {
                detail_rows.push(json!([id, key, json_text(value)]));
            }
        }
        let array = |rows: Vec<Value>| (!rows.is_empty()).then(|| Value::from(rows).to_string());
        Rows {
            tasks: Value::from(task_rows).to_string(),
            steps: array(step_rows),
            details: array(detail_rows),
            step_ids,
            states,
        }
    }

    /// The tasks as inserted.
    fn built(self, first_task: i64, tasks: Vec<NewTask>, now: DateTime<Utc>) -> Vec<Task> {
        (first_task..)
            .zip(tasks)
            .zip(self.step_ids)
            .zip(self.states)
            .map(|(((id, new), ids), (initial, next_run_at))| {
                built(id, new, ids, initial, next_run_at, now)
            })
            .collect()
    }
}

/// Insert `tasks` (none with a code) inside the caller's transaction.
pub(super) async fn insert_new(
    conn: &mut SqliteConnection,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Task>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let (first_task, first_step): (i64, i64) = sqlx::query_as(NEXT_IDS_SQL)
        .fetch_one(&mut *conn)
        .await
        .context("reserving task and step ids")?;
    let rows = Rows::new(&tasks, first_task, first_step, now);
    sqlx::query(INSERT_TASKS_SQL)
        .bind(&rows.tasks)
        .bind(ms(now))
        .execute(&mut *conn)
        .await
        .context("inserting tasks")?;
    if let Some(steps) = &rows.steps {
        sqlx::query(INSERT_STEPS_SQL)
            .bind(steps)
            .execute(&mut *conn)
            .await
            .context("inserting steps")?;
    }
    if let Some(details) = &rows.details {
        sqlx::query(INSERT_DETAILS_SQL)
            .bind(details)
            .execute(&mut *conn)
            .await
            .context("inserting task details")?;
    }
    // Sealed secrets are binary and rare: one statement each.
    for (id, new) in (first_task..).zip(&tasks) {
        for secret in &new.secrets {
            insert_secret(conn, id, secret)
                .await
                .context("inserting task secrets")?;
        }
    }
    Ok(rows.built(first_task, tasks, now))
}

/// Whether [`insert_plain_in`] can take these: no code to upsert, no secrets.
pub(super) fn plain(tasks: &[NewTask]) -> bool {
    tasks
        .iter()
        .all(|task| task.code.is_none() && task.secrets.is_empty())
}

/// Insert [`plain`] tasks (not none) in the hot transaction `tx`, on the
/// hot connection (see [`super::direct`]): the statements stay prepared,
/// and a create is one hand-off to a blocking thread instead of a round trip
/// to sqlx's connection thread per statement. The hot connection has its
/// CHECK constraints off: every value here comes from a validated
/// [`NewTask`] (the API checks ranges; statuses are Rust enums).
pub(super) fn insert_plain_in(
    tx: &Transaction,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
    moves: &mut TaskMoves,
) -> anyhow::Result<Vec<Task>> {
    let (first_task, first_step): (i64, i64) = tx
        .prepare_cached(NEXT_IDS_SQL)?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .context("reserving task and step ids")?;
    let rows = Rows::new(&tasks, first_task, first_step, now);
    tx.prepare_cached(INSERT_TASKS_SQL)?
        .execute(params![rows.tasks, ms(now)])
        .context("inserting tasks")?;
    for (status, _) in &rows.states {
        moves.add(*status, 1);
    }
    if let Some(steps) = &rows.steps {
        tx.prepare_cached(INSERT_STEPS_SQL)?
            .execute([steps])
            .context("inserting steps")?;
    }
    if let Some(details) = &rows.details {
        tx.prepare_cached(INSERT_DETAILS_SQL)?
            .execute([details])
            .context("inserting task details")?;
    }
    Ok(rows.built(first_task, tasks, now))
}
