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

/// The steps of these tasks, `step_ids` handed out in order.
pub(super) async fn insert_steps(
    conn: &mut PgConnection,
    tasks: &[(i64, &NewTask)],
    step_ids: &[i64],
) -> StoreResult<()> {
    let steps: Vec<_> = tasks
        .iter()
        .flat_map(|(id, new)| new.steps.iter().map(move |step| (*id, step)))
        .collect();
    if steps.is_empty() {
        return Ok(());
    }
    let task_ids: Vec<i64> = steps.iter().map(|(id, _)| *id).collect();
    let sort_orders: Vec<i64> = steps.iter().map(|(_, s)| s.sort_order).collect();
    let controllers: Vec<&str> = steps.iter().map(|(_, s)| s.controller.as_str()).collect();
    let settings: Vec<String> = steps.iter().map(|(_, s)| s.settings.to_string()).collect();
    let limits: Vec<i64> = steps.iter().map(|(_, s)| s.max_execution_time).collect();
    let memories: Vec<Option<i64>> = steps.iter().map(|(_, s)| s.max_memory).collect();
    let interrupts: Vec<bool> = steps
        .iter()
        .map(|(_, s)| s.interrupt_on_step_fault)
        .collect();
    let statuses: Vec<&str> = steps.iter().map(|(_, s)| s.status.as_str()).collect();
    sqlx::query(
        "INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
                max_memory, interrupt_on_step_fault, status) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                              $6::bigint[], $7::bigint[], $8::boolean[], $9::text[])",
    )
    .bind(step_ids)
    .bind(&task_ids)
    .bind(&sort_orders)
    .bind(&controllers)
    .bind(&settings)
    .bind(&limits)
    .bind(&memories)
    .bind(&interrupts)
    .bind(&statuses)
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
    let mut task_ids = Vec::new();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (id, new) in tasks {
        for (key, value) in &new.details {
            task_ids.push(*id);
            keys.push(key.as_str());
            values.push(value.to_string());
        }
    }
    if task_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO task_details (task_id, key, value) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
    )
    .bind(&task_ids)
    .bind(&keys)
    .bind(&values)
    .execute(&mut *conn)
    .await
    .context("inserting task details")?;
    Ok(())
}

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
    sqlx::query(
        "INSERT INTO tasks (id, name, status, priority, start_at, run_interval, max_execution_time, \
                max_attempts, next_run_at, created_by, cron, timezone, hook_url, max_starts_per_minute, \
                created_at, updated_at) \
         SELECT u.*, $13, $13 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], \
                $11::text[], $12::text[], $14::text[], $15::bigint[]) AS u",
    )
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
    .bind(&rates)
    .execute(&mut *conn)
    .await
    .context("inserting tasks")?;

    let pairs: Vec<(i64, &NewTask)> = ids.iter().copied().zip(&tasks).collect();
    insert_steps(conn, &pairs, &all_step_ids).await?;
    insert_details(conn, &pairs).await?;
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
