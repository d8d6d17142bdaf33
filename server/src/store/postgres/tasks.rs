//! Tasks as users see them: create (or replace by code), read, list, patch,
//! delete, cleanup and counts. A write that depends on a task's status reads
//! it with `FOR UPDATE`, so a claim or a run's end on another node cannot
//! change it between the check and the write.

use super::rows::{
    Kin, load_children, load_task, ms, opt_ms, parse, task_columns, task_from_row, time,
};
use super::{PostgresStore, create_batch};
use crate::store::ScheduleRow;
use crate::store::{
    NewTask, SealedSecret, Step, StoreError, StoreResult, Task, TaskFilter, TaskPatch, TaskStatus,
};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;

/// Statuses `delete_finished_tasks` removes when no status is given.
const FINISHED: [TaskStatus; 3] = [
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

fn not_found(id: i64) -> StoreError {
    StoreError::NotFound(format!("task {id}"))
}

/// The status of a task, locked until the transaction ends.
pub(super) async fn lock_status(conn: &mut PgConnection, id: i64) -> StoreResult<TaskStatus> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(parse(&status.ok_or_else(|| not_found(id))?)?)
}

pub(super) async fn reload(conn: &mut PgConnection, id: i64) -> StoreResult<Task> {
    load_task(conn, id).await?.ok_or_else(|| not_found(id))
}

pub(super) async fn create(
    store: &PostgresStore,
    new: NewTask,
    now: DateTime<Utc>,
) -> StoreResult<(Task, bool)> {
    let mut tx = store.pool.begin().await?;
    let created = create_in(&mut tx, new, now).await;
    super::settle(tx, created).await
}

/// Batches of at most this many plain creates go in on a connection of
/// their own that plans generically (see [`super::hot_connections`]):
/// knowing its arrays' lengths, PostgreSQL would otherwise plan the insert
/// afresh at every call, for half a millisecond. An idle node's creates
/// come one at a time, and for a handful of rows the generic plan is as
/// good. Larger batches keep the shared pool's custom plans, which fit
/// their size.
const GENERIC_PLAN_BATCH: usize = 8;

/// Several creates in one transaction (one commit). A conflict (a running
/// task's code) fails only its own item: it is detected before any write.
/// Creates without a code are inserted set-based. `deferred`: plain creates
/// commit without waiting for the WAL flush (see [`super::deferred`]);
/// creates with a code or secrets always wait.
pub(super) async fn create_many(
    store: &PostgresStore,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
    deferred: bool,
) -> StoreResult<Vec<StoreResult<(Task, bool)>>> {
    // Without codes or secrets, the batch's rows go in with one statement
    // (ids included), which PostgreSQL commits on its own: no `BEGIN` and
    // `COMMIT` round trips.
    if create_batch::one_statement(&tasks) {
        let mut conn = if tasks.len() <= GENERIC_PLAN_BATCH {
            store.hot.small_creates.acquire().await?
        } else {
            store.pool.acquire().await?
        };
        let mark = store.deferred.mark();
        let created = create_batch::insert_new(&mut conn, tasks, now, deferred).await?;
        if deferred {
            store.deferred.committed();
        } else if !created.is_empty() {
            store.deferred.covered_by(mark);
        }
        return Ok(created.into_iter().map(|task| Ok((task, true))).collect());
    }
    let mut tx = store.pool.begin().await?;
    let mark = store.deferred.mark();
    let result = create_many_in(&mut tx, tasks, now).await;
    let results = super::settle(tx, result).await?;
    if results.iter().any(Result::is_ok) {
        store.deferred.covered_by(mark);
    }
    Ok(results)
}

async fn create_many_in(
    tx: &mut PgConnection,
    tasks: Vec<NewTask>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<StoreResult<(Task, bool)>>> {
    let mut results: Vec<Option<StoreResult<(Task, bool)>>> = Vec::with_capacity(tasks.len());
    let mut plain = Vec::new();
    for new in tasks {
        if new.code.is_some() {
            match create_in(tx, new, now).await {
                Err(StoreError::Conflict(message)) => {
                    results.push(Some(Err(StoreError::Conflict(message))))
                }
                Err(other) => return Err(other),
                Ok(created) => results.push(Some(Ok(created))),
            }
        } else {
            results.push(None);
            plain.push(new);
        }
    }
    let mut inserted = create_batch::insert_new(tx, plain, now, false)
        .await?
        .into_iter();
    Ok(results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| Ok((inserted.next().expect("one per plain create"), true)))
        })
        .collect())
}

/// A new task's status and first due time.
pub(super) fn initial_state(
    new: &NewTask,
    now: DateTime<Utc>,
) -> (TaskStatus, Option<DateTime<Utc>>) {
    if new.disabled {
        (TaskStatus::Disabled, None)
    } else {
        let due = crate::schedule::first_due(new.cron.as_deref(), &new.timezone, new.start_at, now);
        (
            TaskStatus::Scheduled,
            Some(due.unwrap_or(new.start_at.unwrap_or(now))),
        )
    }
}

pub(super) async fn create_in(
    tx: &mut PgConnection,
    new: NewTask,
    now: DateTime<Utc>,
) -> StoreResult<(Task, bool)> {
    let (initial, next_run_at) = initial_state(&new, now);

    // Two nodes creating one new code at once: the insert of the second
    // waits for the first and then inserts nothing (`ON CONFLICT DO
    // NOTHING`), and the second goes round again to replace what the first
    // created — as if it had come after it.
    let (id, created) = loop {
        let existing: Option<(i64, String)> = match &new.code {
            Some(code) => {
                sqlx::query_as("SELECT id, status FROM tasks WHERE code = $1 FOR UPDATE")
                    .bind(code)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        break match existing {
            Some((_, status)) if status == TaskStatus::Running.as_str() => {
                let code = new.code.as_deref().unwrap_or_default();
                return Err(StoreError::Conflict(format!(
                    "task `{code}` is running; try again when it finishes"
                )));
            }
            Some((id, _)) => {
                // Replace the definition; runs (and step runs, which keep copies of
                // controller and sort order) stay as history.
                sqlx::query(
                "UPDATE tasks SET name = $2, priority = $3, start_at = $4, run_interval = $5, \
                        max_execution_time = $6, max_attempts = $7, status = $8, next_run_at = $9, \
                        attempts = 0, progress = 0, resume_from_run_id = NULL, pending_trigger = NULL, \
                        pending_step_id = NULL, cancel_requested = FALSE, updated_at = $10, \
                        cron = $11, timezone = $12, hook_url = $13, max_starts_per_minute = $14 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&new.name)
            .bind(new.priority.rank())
            .bind(opt_ms(new.start_at))
            .bind(new.run_interval)
            .bind(new.max_execution_time)
            .bind(new.max_attempts)
            .bind(initial.as_str())
            .bind(opt_ms(next_run_at))
            .bind(ms(now))
            .bind(&new.cron)
            .bind(&new.timezone)
            .bind(&new.hook_url)
            .bind(new.max_starts_per_minute)
            .execute(&mut *tx)
            .await?;
                sqlx::query("DELETE FROM steps WHERE task_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM task_details WHERE task_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if !new.keep_secrets {
                    sqlx::query("DELETE FROM task_secrets WHERE task_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                (id, false)
            }
            None => {
                let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO tasks (name, code, status, priority, start_at, run_interval, \
                        max_execution_time, max_attempts, next_run_at, created_by, created_at, updated_at, \
                        cron, timezone, hook_url, max_starts_per_minute) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15) \
                 ON CONFLICT (code) WHERE code IS NOT NULL DO NOTHING RETURNING id",
            )
            .bind(&new.name)
            .bind(&new.code)
            .bind(initial.as_str())
            .bind(new.priority.rank())
            .bind(opt_ms(new.start_at))
            .bind(new.run_interval)
            .bind(new.max_execution_time)
            .bind(new.max_attempts)
            .bind(opt_ms(next_run_at))
            .bind(&new.created_by)
            .bind(ms(now))
            .bind(&new.cron)
            .bind(&new.timezone)
            .bind(&new.hook_url)
            .bind(new.max_starts_per_minute)
            .fetch_optional(&mut *tx)
            .await?;
                match id {
                    Some(id) => (id, true),
                    None => continue,
                }
            }
        };
    };
    let step_ids = insert_children(tx, id, &new, created || !new.keep_secrets).await?;
    if !created {
        // A replaced task keeps fields (history, last result) the request does not carry.
        return Ok((reload(tx, id).await?, false));
    }
    Ok((built(id, new, step_ids, initial, next_run_at, now), true))
}

/// The task a create inserted, built from the request instead of read back.
pub(super) fn built(
    id: i64,
    new: NewTask,
    step_ids: Vec<i64>,
    initial: TaskStatus,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Task {
    let at = time(ms(now));
    let mut steps: Vec<Step> = new
        .steps
        .iter()
        .zip(step_ids)
        .map(|(step, step_id)| Step {
            id: step_id,
            task_id: id,
            sort_order: step.sort_order,
            controller: step.controller.clone(),
            settings: step.settings.clone(),
            max_execution_time: step.max_execution_time,
            max_memory: step.max_memory,
            interrupt_on_step_fault: step.interrupt_on_step_fault,
            status: step.status,
        })
        .collect();
    steps.sort_by_key(|s| (s.sort_order, s.id));
    let mut secret_names: Vec<String> = new.secrets.iter().map(|s| s.name.clone()).collect();
    secret_names.sort();
    Task {
        id,
        name: new.name,
        code: new.code,
        status: initial,
        priority: new.priority,
        start_at: new.start_at.map(|t| time(ms(t))),
        run_interval: new.run_interval,
        cron: new.cron,
        timezone: new.timezone,
        max_execution_time: new.max_execution_time,
        max_attempts: new.max_attempts,
        attempts: 0,
        progress: 0.0,
        message: None,
        last_result: None,
        last_run_at: None,
        next_run_at: next_run_at.map(|t| time(ms(t))),
        created_by: new.created_by,
        hook_url: new.hook_url,
        max_starts_per_minute: new.max_starts_per_minute,
        details: new.details,
        secret_names,
        current_run_id: None,
        created_at: at,
        updated_at: at,
        steps,
        next_runs: Vec::new(),
    }
}

/// Steps, details and (with `secrets`) secrets of a new or replaced task,
/// through the set-based inserts of [`create_batch`]. Returns the new
/// steps' ids, in the order of `new.steps`.
async fn insert_children(
    conn: &mut PgConnection,
    id: i64,
    new: &NewTask,
    secrets: bool,
) -> StoreResult<Vec<i64>> {
    let step_ids = create_batch::reserve_ids(conn, "steps", new.steps.len()).await?;
    create_batch::insert_steps(conn, &[(id, new)], &step_ids).await?;
    create_batch::insert_details(conn, &[(id, new)]).await?;
    if secrets {
        for secret in &new.secrets {
            insert_secret(conn, id, secret).await?;
        }
    }
    Ok(step_ids)
}

/// Add a secret, or replace the task's secret of that name.
pub(super) async fn insert_secret(
    conn: &mut PgConnection,
    task_id: i64,
    secret: &SealedSecret,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO task_secrets (task_id, name, nonce, ciphertext) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (task_id, name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
    )
    .bind(task_id)
    .bind(&secret.name)
    .bind(&secret.nonce)
    .bind(&secret.ciphertext)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_detail(
    conn: &mut PgConnection,
    id: i64,
    key: &str,
    value: &serde_json::Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO task_details (task_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(id)
    .bind(key)
    .bind(value.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn get(store: &PostgresStore, id: i64) -> StoreResult<Option<Task>> {
    let mut conn = store.pool.acquire().await?;
    Ok(load_task(&mut conn, id).await?)
}

pub(super) async fn list(store: &PostgresStore, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
    // Only the filters in use go into the SQL (numbered as they come), so
    // each shape gets its own plan and can use its index.
    let mut sql = String::from(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE TRUE"
    ));
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if filter.status.is_some() {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if filter.code.is_some() {
        sql.push_str(&format!(" AND code = ${}", next()));
    }
    if filter.module.is_some() {
        sql.push_str(&format!(
            " AND id IN (SELECT task_id FROM steps WHERE controller = ${})",
            next()
        ));
    }
    if filter.before_id.is_some() {
        sql.push_str(&format!(" AND id < ${}", next()));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", next()));
    let mut query = sqlx::query(&sql);
    if let Some(status) = filter.status {
        query = query.bind(status.as_str());
    }
    if let Some(code) = &filter.code {
        query = query.bind(code);
    }
    if let Some(module) = &filter.module {
        query = query.bind(module);
    }
    if let Some(before) = filter.before_id {
        query = query.bind(before);
    }
    let mut conn = store.pool.acquire().await?;
    let rows = query
        .bind(filter.limit.max(0))
        .fetch_all(&mut *conn)
        .await?;
    let mut tasks = rows
        .iter()
        .map(task_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kin = Kin::unknown(&tasks);
    load_children(&mut conn, &mut tasks, false, &kin).await?;
    Ok(tasks)
}

pub(super) async fn update(
    store: &PostgresStore,
    id: i64,
    patch: &TaskPatch,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = store.pool.begin().await?;
    let result = update_in(&mut tx, id, patch, now).await;
    super::settle(tx, result).await
}

async fn update_in(
    tx: &mut PgConnection,
    id: i64,
    patch: &TaskPatch,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let row = sqlx::query(
        "SELECT status, start_at, next_run_at, cron, timezone, \
                pending_trigger IS NULL AND resume_from_run_id IS NULL AS on_schedule \
         FROM tasks WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| not_found(id))?;
    let row = ScheduleRow {
        status: parse(row.try_get("status")?)?,
        start_at: row.try_get("start_at")?,
        next_run_at: row.try_get("next_run_at")?,
        cron: row.try_get("cron")?,
        timezone: row.try_get("timezone")?,
        on_schedule: row.try_get("on_schedule")?,
    };
    let patched = super::super::patch_schedule(id, row, patch, now)?;
    sqlx::query(
        "UPDATE tasks SET name = COALESCE($2, name), priority = COALESCE($3, priority), start_at = $4, \
                run_interval = COALESCE($5, run_interval), \
                max_execution_time = COALESCE($6, max_execution_time), \
                max_attempts = COALESCE($7, max_attempts), status = $8, next_run_at = $9, \
                pending_trigger = CASE WHEN $8 = 'disabled' THEN NULL ELSE pending_trigger END, \
                pending_step_id = CASE WHEN $8 = 'disabled' THEN NULL ELSE pending_step_id END, \
                updated_at = $10, cron = $11, timezone = $12, \
                hook_url = CASE WHEN $13 THEN $14 ELSE hook_url END, \
                max_starts_per_minute = CASE WHEN $15 THEN $16 ELSE max_starts_per_minute END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(&patch.name)
    .bind(patch.priority.map(|p| p.rank()))
    .bind(patched.start_at)
    .bind(patch.run_interval)
    .bind(patch.max_execution_time)
    .bind(patch.max_attempts)
    .bind(patched.status.as_str())
    .bind(patched.next_run_at)
    .bind(ms(now))
    .bind(&patched.cron)
    .bind(&patched.timezone)
    .bind(patch.hook_url.is_some())
    .bind(patch.hook_url.clone().flatten())
    .bind(patch.max_starts_per_minute.is_some())
    .bind(patch.max_starts_per_minute.flatten())
    .execute(&mut *tx)
    .await?;
    for (key, value) in patch.details.iter().flatten() {
        if value.is_null() {
            sqlx::query("DELETE FROM task_details WHERE task_id = $1 AND key = $2")
                .bind(id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        } else {
            upsert_detail(tx, id, key, value).await?;
        }
    }
    if !patch.remove_secrets.is_empty() {
        sqlx::query("DELETE FROM task_secrets WHERE task_id = $1 AND name = ANY($2)")
            .bind(id)
            .bind(&patch.remove_secrets)
            .execute(&mut *tx)
            .await?;
    }
    for secret in &patch.set_secrets {
        insert_secret(tx, id, secret).await?;
    }
    for (step_id, step_status) in &patch.step_status {
        let changed = sqlx::query("UPDATE steps SET status = $3 WHERE id = $1 AND task_id = $2")
            .bind(step_id)
            .bind(id)
            .bind(step_status.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("step {step_id} of task {id}")));
        }
    }
    let task = reload(tx, id).await?;
    Ok(task)
}

pub(super) async fn delete(store: &PostgresStore, id: i64) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    let result = delete_in(&mut tx, id).await;
    super::settle(tx, result).await
}

async fn delete_in(tx: &mut PgConnection, id: i64) -> StoreResult<()> {
    if lock_status(tx, id).await? == TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is running; cancel it or wait until it finishes before deleting it"
        )));
    }
    sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    delete_runs_of(tx, &[id]).await
}

/// The runs of deleted tasks, with their step runs: no foreign key cascades
/// to them (migration 0014). Run after the tasks' delete, as a statement of
/// its own, so that its snapshot holds every run a claim committed before
/// the delete took the tasks' rows; no claim can start one after, as a
/// claim inserts a run only for a task it holds locked.
async fn delete_runs_of(tx: &mut PgConnection, task_ids: &[i64]) -> StoreResult<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM runs WHERE task_id = ANY($1) RETURNING id) \
         DELETE FROM step_runs WHERE run_id IN (SELECT id FROM gone)",
    )
    .bind(task_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn delete_finished(
    store: &PostgresStore,
    finished_before: DateTime<Utc>,
    status: Option<TaskStatus>,
) -> StoreResult<u64> {
    let statuses: Vec<String> = match status {
        Some(TaskStatus::Running) => {
            return Err(StoreError::Conflict(
                "running tasks cannot be cleaned up; cancel them first".to_string(),
            ));
        }
        Some(status) => vec![status.as_str().to_string()],
        None => FINISHED.iter().map(|s| s.as_str().to_string()).collect(),
    };
    // Batched, a transaction a batch: deleting a task cascades to its events
    // and the rest it owns, and `delete_runs_of` takes its runs.
    // `status = ANY(…)` is re-checked on the latest row version, so a task
    // run again meanwhile by another node is left alone.
    let mut deleted = 0;
    loop {
        let mut tx = store.pool.begin().await?;
        let batch: StoreResult<Vec<i64>> = async {
            let ids: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
                     WHERE status = ANY($3) AND updated_at < $1 LIMIT $2) \
                   AND status = ANY($3) AND updated_at < $1 \
                 RETURNING id",
            )
            .bind(ms(finished_before))
            .bind(super::records::DELETE_BATCH)
            .bind(&statuses)
            .fetch_all(&mut *tx)
            .await?;
            delete_runs_of(&mut tx, &ids).await?;
            Ok(ids)
        }
        .await;
        let batch = super::settle(tx, batch).await?.len() as u64;
        deleted += batch;
        if batch < super::records::DELETE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}
