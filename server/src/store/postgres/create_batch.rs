//! New tasks (no code to upsert) inserted set-based: one statement each for
//! the tasks, their steps and their details, whatever the batch size (rows
//! travel as one array per column, zipped by `unnest`). The API
//! group-commits concurrent creates into batches of hundreds.
//!
//! Ids are reserved from the tables' identity sequences first (`nextval`
//! never hands an id out twice, whatever the other nodes do), so each step
//! and detail row is tied to its task without reading ids back.

use super::rows::{ms, opt_ms};
use super::tasks::{built, initial_state, insert_secret};
use crate::store::{NewTask, StoreResult, Task};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use std::sync::LazyLock;

/// `count` fresh ids of `table`'s identity column, ascending.
pub(super) async fn reserve_ids(
    conn: &mut PgConnection,
    table: &str,
    count: usize,
) -> StoreResult<Vec<i64>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2::bigint)",
    )
    .bind(table)
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("reserving {table} ids"))?;
    ids.sort_unstable();
    Ok(ids)
}

/// Fresh task and step ids in one round trip, each list ascending.
async fn reserve_task_and_step_ids(
    conn: &mut PgConnection,
    tasks: usize,
    steps: usize,
) -> StoreResult<(Vec<i64>, Vec<i64>)> {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let (mut task_ids, mut step_ids): (Vec<i64>, Vec<i64>) = sqlx::query_as(
        "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('tasks', 'id')) \
                      FROM generate_series(1, $1::bigint)), \
                ARRAY(SELECT nextval(pg_get_serial_sequence('steps', 'id')) \
                      FROM generate_series(1, $2::bigint))",
    )
    .bind(count(tasks))
    .bind(count(steps))
    .fetch_one(&mut *conn)
    .await
    .context("reserving task and step ids")?;
    task_ids.sort_unstable();
    step_ids.sort_unstable();
    Ok((task_ids, step_ids))
}

/// Array parameters from `$first` on, one per type in `types`.
fn array_params(first: usize, types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

const STEP_TYPES: [&str; 9] = [
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

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The steps of these tasks as columns, `step_ids` handed out in order.
struct StepRows<'a> {
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
    fn new(tasks: &[(i64, &'a NewTask)], step_ids: &'a [i64]) -> Self {
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
        query
            .bind(self.ids)
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
struct DetailRows<'a> {
    task_ids: Vec<i64>,
    keys: Vec<&'a str>,
    values: Vec<String>,
}

impl<'a> DetailRows<'a> {
    fn new(tasks: &[(i64, &'a NewTask)]) -> Self {
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

    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
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

/// New tasks, their steps and their details in one statement (`$1`–`$15`
/// the tasks, then the steps' and the details' arrays): a round trip for
/// the whole batch, and with nothing else to write, no transaction around it.
/// The steps' and details' foreign keys are checked at the statement's end,
/// when its tasks are in.
static INSERT_NEW_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH new_tasks AS ( \
            INSERT INTO tasks (id, name, status, priority, start_at, run_interval, \
                   max_execution_time, max_attempts, next_run_at, created_by, cron, timezone, \
                   hook_url, max_starts_per_minute, created_at, updated_at) \
            SELECT u.*, $13, $13 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                   $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
                   $10::text[], $11::text[], $12::text[], $14::text[], $15::bigint[]) AS u), \
         new_steps AS ({steps}) \
         {details}",
        steps = insert_steps_sql(16),
        details = insert_details_sql(16 + STEP_TYPES.len()),
    )
});

/// Whether these new tasks go in with one statement alone (see
/// [`insert_new`]): a code may replace a task, and sealed secrets are
/// written one by one.
pub(super) fn one_statement(tasks: &[NewTask]) -> bool {
    tasks
        .iter()
        .all(|t| t.code.is_none() && t.secrets.is_empty())
}

/// New tasks without a code: ids reserved, then one statement for all rows
/// (and one per sealed secret).
pub(super) async fn insert_new(
    conn: &mut PgConnection,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Task>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let step_count = tasks.iter().map(|t| t.steps.len()).sum();
    let (ids, all_step_ids) = reserve_task_and_step_ids(conn, tasks.len(), step_count).await?;
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
    let pairs: Vec<(i64, &NewTask)> = ids.iter().copied().zip(&tasks).collect();
    let steps = StepRows::new(&pairs, &all_step_ids);
    let details = DetailRows::new(&pairs);
    let query = sqlx::query(&INSERT_NEW_SQL)
        .bind(&ids)
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
        .bind(ms(now))
        .bind(&hooks)
        .bind(&rates);
    details
        .bind(steps.bind(query))
        .execute(&mut *conn)
        .await
        .context("inserting tasks")?;
    // Sealed secrets are binary and rare: one statement each.
    for (id, new) in &pairs {
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
