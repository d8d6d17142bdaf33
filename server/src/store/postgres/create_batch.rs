//! New tasks (no code to upsert) inserted set-based: one statement each for
//! the tasks, their steps and their details, whatever the batch size (rows
//! travel as one array per column, zipped by `unnest`). The API
//! group-commits concurrent creates into batches of hundreds.
//!
//! Ids come from the tables' identity sequences (`nextval` never hands an id
//! out twice, whatever the other nodes do). New tasks take theirs inside the
//! statement that inserts them, which returns them (a round trip fewer per
//! create); a replaced task's new steps reserve theirs first.

use super::rows::{ms, next_id, opt_ms};
use super::tasks::{built, initial_state, insert_secret};
use crate::store::{NewTask, StoreResult, Task};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use std::sync::LazyLock;

/// `$2` fresh ids of the identity column of the table named `$1`.
static RESERVE_IDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM generate_series(1, $2::bigint)",
        next_id("$1")
    )
});

/// `count` fresh ids of `table`'s identity column, ascending.
pub(super) async fn reserve_ids(
    conn: &mut PgConnection,
    table: &str,
    count: usize,
) -> StoreResult<Vec<i64>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(RESERVE_IDS.as_str())
        .bind(table)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("reserving {table} ids"))?;
    ids.sort_unstable();
    Ok(ids)
}

/// Array parameters from `$first` on, one per type in `types`.
pub(super) fn array_params(first: usize, types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) const STEP_TYPES: [&str; 9] = [
    "bigint", "bigint", "bigint", "text", "text", "bigint", "bigint", "boolean", "text",
];

/// The steps' insert, its arrays bound from `$first` on ([`StepRows::bind`]).
fn insert_steps_sql(first: usize) -> String {
    format!(
        "INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
                max_memory, interrupt_on_step_fault, status) \
         SELECT * FROM unnest({})",
        array_params(first, &STEP_TYPES)
    )
}

/// The details' insert, its arrays bound from `$first` on ([`DetailRows::bind`]).
fn insert_details_sql(first: usize) -> String {
    format!(
        "INSERT INTO task_details (task_id, key, value) SELECT * FROM unnest({})",
        array_params(first, &["bigint", "text", "text"])
    )
}

pub(super) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The steps of these tasks as columns, `step_ids` handed out in order.
/// `task_ids` are whatever key `tasks` pairs each new task with: its id, or
/// its place in the batch for [`INSERT_NEW_SQL`].
pub(super) struct StepRows<'a> {
    ids: &'a [i64],
    task_ids: Vec<i64>,
    sort_orders: Vec<i64>,
    controllers: Vec<&'a str>,
    settings: Vec<String>,
    limits: Vec<i64>,
    memories: Vec<Option<i64>>,
    interrupts: Vec<bool>,
    statuses: Vec<&'a str>,
}

impl<'a> StepRows<'a> {
    pub(super) fn new(tasks: &[(i64, &'a NewTask)], step_ids: &'a [i64]) -> Self {
        let steps: Vec<_> = tasks
            .iter()
            .flat_map(|(id, new)| new.steps.iter().map(move |step| (*id, step)))
            .collect();
        StepRows {
            ids: step_ids,
            task_ids: steps.iter().map(|(id, _)| *id).collect(),
            sort_orders: steps.iter().map(|(_, s)| s.sort_order).collect(),
            controllers: steps.iter().map(|(_, s)| s.controller.as_str()).collect(),
            settings: steps.iter().map(|(_, s)| s.settings.to_string()).collect(),
            limits: steps.iter().map(|(_, s)| s.max_execution_time).collect(),
            memories: steps.iter().map(|(_, s)| s.max_memory).collect(),
            interrupts: steps
                .iter()
                .map(|(_, s)| s.interrupt_on_step_fault)
                .collect(),
            statuses: steps.iter().map(|(_, s)| s.status.as_str()).collect(),
        }
    }

    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        self.bind_all_but_ids(query.bind(self.ids))
    }

    /// The columns but the ids (for [`INSERT_NEW_SQL`], which takes them).
    pub(super) fn bind_all_but_ids<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.task_ids)
            .bind(&self.sort_orders)
            .bind(&self.controllers)
            .bind(&self.settings)
            .bind(&self.limits)
            .bind(&self.memories)
            .bind(&self.interrupts)
            .bind(&self.statuses)
    }
}

/// The details of these tasks as columns.
pub(super) struct DetailRows<'a> {
    task_ids: Vec<i64>,
    keys: Vec<&'a str>,
    values: Vec<String>,
}

impl<'a> DetailRows<'a> {
    pub(super) fn new(tasks: &[(i64, &'a NewTask)]) -> Self {
        let mut rows = DetailRows {
            task_ids: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
        };
        for (id, new) in tasks {
            for (key, value) in &new.details {
                rows.task_ids.push(*id);
                rows.keys.push(key.as_str());
                rows.values.push(value.to_string());
            }
        }
        rows
    }

    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.task_ids)
            .bind(&self.keys)
            .bind(&self.values)
    }
}

/// The steps of these tasks, `step_ids` handed out in order.
pub(super) async fn insert_steps(
    conn: &mut PgConnection,
    tasks: &[(i64, &NewTask)],
    step_ids: &[i64],
) -> StoreResult<()> {
    if step_ids.is_empty() {
        return Ok(());
    }
    let rows = StepRows::new(tasks, step_ids);
    let sql = insert_steps_sql(1);
    rows.bind(sqlx::query(&sql))
        .execute(&mut *conn)
        .await
        .context("inserting steps")?;
    Ok(())
}

/// The details of these tasks.
pub(super) async fn insert_details(
    conn: &mut PgConnection,
    tasks: &[(i64, &NewTask)],
) -> StoreResult<()> {
    let rows = DetailRows::new(tasks);
    if rows.task_ids.is_empty() {
        return Ok(());
    }
    let sql = insert_details_sql(1);
    rows.bind(sqlx::query(&sql))
        .execute(&mut *conn)
        .await
        .context("inserting task details")?;
    Ok(())
}

/// New tasks, their steps and their details in one statement, ids included
/// (`$1`–`$13` the tasks' columns, `$14` the time, then the steps' and the
/// details' arrays, each tied to its task by the task's place in the batch,
/// 1-based): a round trip for the whole batch, and with nothing else to
/// write, no transaction around it. It returns the tasks' ids and the
/// steps' ids, each in the order given. The steps' and details' foreign keys
/// are checked at the statement's end, when its tasks are in.
static INSERT_NEW_SQL: LazyLock<String> = LazyLock::new(|| insert_new_sql(false));

/// [`INSERT_NEW_SQL`] committing without waiting for the WAL flush (the
/// `relaxed` CTE sets `synchronous_commit` off for the statement's own
/// transaction), for deferred creates (see [`super::deferred`]).
static INSERT_NEW_RELAXED_SQL: LazyLock<String> = LazyLock::new(|| insert_new_sql(true));

fn insert_new_sql(relaxed: bool) -> String {
    let (relaxed_cte, relaxed_join) = if relaxed {
        (
            format!("{}, ", super::deferred::RELAXED_CTE),
            "relaxed CROSS JOIN ",
        )
    } else {
        (String::new(), "")
    };
    let step_columns = "task_place, sort_order, controller, settings, max_execution_time, \
                        max_memory, interrupt_on_step_fault, status";
    let (next_task_id, next_step_id) = (next_id("'tasks'"), next_id("'steps'"));
    format!(
        "WITH {relaxed_cte}task_ids AS MATERIALIZED ( \
            SELECT place, {next_task_id} AS id \
            FROM {relaxed_join}generate_series(1, cardinality($1::text[])) AS place), \
         step_ids AS MATERIALIZED ( \
            SELECT place, {next_step_id} AS id \
            FROM generate_series(1, cardinality($15::bigint[])) AS place), \
         new_tasks AS ( \
            INSERT INTO tasks (id, name, status, priority, start_at, run_interval, \
                   max_execution_time, max_attempts, next_run_at, created_by, cron, timezone, \
                   hook_url, max_starts_per_minute, created_at, updated_at) \
            SELECT i.id, u.name, u.status, u.priority, u.start_at, u.run_interval, \
                   u.max_execution_time, u.max_attempts, u.next_run_at, u.created_by, u.cron, \
                   u.timezone, u.hook_url, u.max_starts_per_minute, $14, $14 \
            FROM unnest({tasks}) WITH ORDINALITY AS u(name, status, priority, start_at, \
                   run_interval, max_execution_time, max_attempts, next_run_at, created_by, cron, \
                   timezone, hook_url, max_starts_per_minute, place) \
            JOIN task_ids AS i ON i.place = u.place), \
         new_steps AS ( \
            INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
                   max_memory, interrupt_on_step_fault, status) \
            SELECT i.id, t.id, u.sort_order, u.controller, u.settings, u.max_execution_time, \
                   u.max_memory, u.interrupt_on_step_fault, u.status \
            FROM unnest({steps}) WITH ORDINALITY AS u({step_columns}, place) \
            JOIN step_ids AS i ON i.place = u.place JOIN task_ids AS t ON t.place = u.task_place), \
         new_details AS ( \
            INSERT INTO task_details (task_id, key, value) \
            SELECT t.id, u.key, u.value FROM unnest({details}) AS u(task_place, key, value) \
            JOIN task_ids AS t ON t.place = u.task_place) \
         SELECT ARRAY(SELECT id FROM task_ids ORDER BY place) AS task_ids, \
                ARRAY(SELECT id FROM step_ids ORDER BY place) AS step_ids",
        tasks = array_params(
            1,
            &[
                "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text",
                "text", "text", "text", "bigint"
            ]
        ),
        steps = array_params(15, &STEP_TYPES[1..]),
        details = array_params(15 + STEP_TYPES.len() - 1, &["bigint", "text", "text"]),
    )
}

/// Whether these new tasks go in with one statement alone (see
/// [`insert_new`]): a code may replace a task, and sealed secrets are
/// written one by one.
pub(super) fn one_statement(tasks: &[NewTask]) -> bool {
    tasks
        .iter()
        .all(|t| t.code.is_none() && t.secrets.is_empty())
}

/// New tasks without a code: ids reserved, then one statement for all rows
/// (and one per sealed secret). `relaxed`: the statement commits without
/// waiting for the WAL flush (only when it is its own transaction, with no
/// secrets: see [`one_statement`]).
pub(super) async fn insert_new(
    conn: &mut PgConnection,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
    relaxed: bool,
) -> StoreResult<Vec<Task>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let states: Vec<_> = tasks.iter().map(|new| initial_state(new, now)).collect();

    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let statuses: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    let priorities: Vec<i64> = tasks.iter().map(|t| t.priority.rank()).collect();
    let start_ats: Vec<Option<i64>> = tasks.iter().map(|t| opt_ms(t.start_at)).collect();
    let intervals: Vec<i64> = tasks.iter().map(|t| t.run_interval).collect();
    let limits: Vec<i64> = tasks.iter().map(|t| t.max_execution_time).collect();
    let attempts: Vec<i64> = tasks.iter().map(|t| t.max_attempts).collect();
    let next_run_ats: Vec<Option<i64>> = states.iter().map(|(_, at)| opt_ms(*at)).collect();
    let created_by: Vec<Option<&str>> = tasks.iter().map(|t| t.created_by.as_deref()).collect();
    let crons: Vec<Option<&str>> = tasks.iter().map(|t| t.cron.as_deref()).collect();
    let zones: Vec<&str> = tasks.iter().map(|t| t.timezone.as_str()).collect();
    let hooks: Vec<Option<&str>> = tasks.iter().map(|t| t.hook_url.as_deref()).collect();
    let rates: Vec<Option<i64>> = tasks.iter().map(|t| t.max_starts_per_minute).collect();
    // Each task's place in the batch (1-based) ties its steps and details to it.
    let places: Vec<(i64, &NewTask)> = (1..).zip(&tasks).collect();
    let steps = StepRows::new(&places, &[]);
    let details = DetailRows::new(&places);
    let sql = if relaxed {
        &INSERT_NEW_RELAXED_SQL
    } else {
        &INSERT_NEW_SQL
    };
    let query = sqlx::query(sql)
        .bind(&names)
        .bind(&statuses)
        .bind(&priorities)
        .bind(&start_ats)
        .bind(&intervals)
        .bind(&limits)
        .bind(&attempts)
        .bind(&next_run_ats)
        .bind(&created_by)
        .bind(&crons)
        .bind(&zones)
        .bind(&hooks)
        .bind(&rates)
        .bind(ms(now));
    let row = details
        .bind(steps.bind_all_but_ids(query))
        .fetch_one(&mut *conn)
        .await
        .context("inserting tasks")?;
    let ids: Vec<i64> = row.try_get("task_ids").context("reading new task ids")?;
    let all_step_ids: Vec<i64> = row.try_get("step_ids").context("reading new step ids")?;
    // Sealed secrets are binary and rare: one statement each.
    for (id, new) in ids.iter().zip(&tasks) {
        for secret in &new.secrets {
            insert_secret(conn, *id, secret)
                .await
                .context("inserting task secrets")?;
        }
    }

    let mut step_ids = all_step_ids.into_iter();
    Ok(ids
        .into_iter()
        .zip(tasks)
        .zip(states)
        .map(|((id, new), (initial, next_run_at))| {
            let own: Vec<i64> = step_ids.by_ref().take(new.steps.len()).collect();
            built(id, new, own, initial, next_run_at, now)
        })
        .collect())
}
