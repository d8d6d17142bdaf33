//! Events, API tokens and retention.

use super::PostgresStore;
use super::rows::{TOKEN_COLUMNS, event_from_row, ms, time, token_from_row};
use crate::store::log_query::{log_entries, log_statement};
use crate::store::{EventRecord, LogEntry, LogQuery, Role, StoreError, StoreResult, Token};
use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

// ---- events ---------------------------------------------------------------

/// All events in one statement (one array per column, `unnest`ed in order).
pub(super) async fn append_events(
    store: &PostgresStore,
    events: &[EventRecord],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let task_ids: Vec<i64> = events.iter().map(|e| e.task_id).collect();
    let run_ids: Vec<Option<i64>> = events.iter().map(|e| e.run_id).collect();
    let step_ids: Vec<Option<i64>> = events.iter().map(|e| e.step_id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let levels: Vec<Option<&str>> = events.iter().map(|e| e.level.as_deref()).collect();
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let data: Vec<Option<String>> = events
        .iter()
        .map(|e| e.data.as_ref().map(Value::to_string))
        .collect();
    let created: Vec<i64> = events.iter().map(|e| ms(e.created_at)).collect();
    sqlx::query(
        "INSERT INTO events (task_id, run_id, step_id, kind, level, message, data, created_at) \
         SELECT task_id, run_id, step_id, kind, level, message, data, created_at \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                     $6::text[], $7::text[], $8::bigint[]) WITH ORDINALITY \
              AS u(task_id, run_id, step_id, kind, level, message, data, created_at, n) \
         ORDER BY n",
    )
    .bind(&task_ids)
    .bind(&run_ids)
    .bind(&step_ids)
    .bind(&kinds)
    .bind(&levels)
    .bind(&messages)
    .bind(&data)
    .bind(&created)
    .execute(&store.pool)
    .await
    .context("appending events")?;
    Ok(())
}

/// The last `limit` events of a task, oldest first.
pub(super) async fn list_events(
    store: &PostgresStore,
    task_id: i64,
    logs_only: bool,
    limit: i64,
) -> StoreResult<Vec<EventRecord>> {
    let sql = if logs_only {
        "SELECT * FROM (SELECT id, task_id, run_id, step_id, kind, level, message, data, created_at \
                        FROM events WHERE task_id = $1 AND kind = 'log' ORDER BY id DESC LIMIT $2) AS e \
         ORDER BY id"
    } else {
        "SELECT * FROM (SELECT id, task_id, run_id, step_id, kind, level, message, data, created_at \
                        FROM events WHERE task_id = $1 ORDER BY id DESC LIMIT $2) AS e \
         ORDER BY id"
    };
    let rows = sqlx::query(sql)
        .bind(task_id)
        .bind(limit.max(0))
        .fetch_all(&store.pool)
        .await?;
    Ok(rows
        .iter()
        .map(event_from_row)
        .collect::<anyhow::Result<_>>()?)
}

/// Log lines matching `query` (see [`LogQuery`]).
pub(super) async fn list_logs(
    store: &PostgresStore,
    query: &LogQuery,
) -> StoreResult<Vec<LogEntry>> {
    let rows = log_statement(query, ms)
        .build()
        .fetch_all(&store.pool)
        .await?;
    Ok(log_entries(&rows)?)
}

// ---- tokens ---------------------------------------------------------------

/// `last_used_at` is written at most this often per token, so authenticating
/// a request is mostly a read.
const LAST_USED_PRECISION: TimeDelta = TimeDelta::seconds(60);

pub(super) async fn create_token(
    store: &PostgresStore,
    name: &str,
    role: Role,
    token_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Token> {
    let row = sqlx::query(&format!(
        "INSERT INTO tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(name)
    .bind(role.as_str())
    .bind(token_hash)
    .bind(ms(now))
    .fetch_one(&store.pool)
    .await?;
    Ok(token_from_row(&row)?)
}

/// A live (not revoked) token by hash. Marks it used, at most once a minute.
pub(super) async fn find_token(
    store: &PostgresStore,
    token_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Token>> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(token_hash)
    .fetch_optional(&store.pool)
    .await?;
    let Some(mut token) = row.as_ref().map(token_from_row).transpose()? else {
        return Ok(None);
    };
    let stale = token
        .last_used_at
        .is_none_or(|used| now - used >= LAST_USED_PRECISION);
    if stale {
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .bind(token.id)
            .bind(ms(now))
            .execute(&store.pool)
            .await?;
        token.last_used_at = Some(time(ms(now)));
    }
    Ok(Some(token))
}

/// Live tokens, oldest first.
pub(super) async fn list_tokens(store: &PostgresStore) -> StoreResult<Vec<Token>> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY id"
    ))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows
        .iter()
        .map(token_from_row)
        .collect::<anyhow::Result<_>>()?)
}

pub(super) async fn revoke_token(
    store: &PostgresStore,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let revoked =
        sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(ms(now))
            .execute(&store.pool)
            .await?
            .rows_affected();
    if revoked == 0 {
        return Err(StoreError::NotFound(format!("token {id}")));
    }
    Ok(())
}

/// Live tokens (a server whose tokens are all revoked creates a new admin one).
pub(super) async fn count_tokens(store: &PostgresStore) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM tokens WHERE revoked_at IS NULL")
            .fetch_one(&store.pool)
            .await?,
    )
}

// ---- retention ------------------------------------------------------------

/// Rows deleted per statement (each its own transaction), so retention never
/// holds many row locks for long.
pub(super) const DELETE_BATCH: i64 = 500;

/// Finished runs that ended before `before`, with their step runs (no
/// foreign key cascades to them: migration 0014) and their artifacts (by
/// cascade), except each task's latest run, a run its task still points at
/// and a run whose completion hook is still to be delivered (its delivery
/// would go with it); then events older than `before`. Returns runs +
/// events removed.
pub(super) async fn prune(store: &PostgresStore, before: DateTime<Utc>) -> StoreResult<u64> {
    let before = ms(before);
    let runs = delete_in_batches(
        store,
        "WITH doomed AS MATERIALIZED ( \
             SELECT id FROM runs AS r WHERE r.status <> 'running' AND r.finished_at < $1 \
               AND r.id < (SELECT max(latest.id) FROM runs AS latest WHERE latest.task_id = r.task_id) \
               AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = r.task_id \
                               AND (tasks.resume_from_run_id = r.id OR tasks.current_run_id = r.id)) \
               AND NOT EXISTS (SELECT 1 FROM hook_deliveries AS d \
                               WHERE d.run_id = r.id AND d.status = 'pending') \
             LIMIT $2), \
         steps AS (DELETE FROM step_runs WHERE run_id IN (SELECT id FROM doomed)) \
         DELETE FROM runs WHERE id IN (SELECT id FROM doomed)",
        before,
    )
    .await
    .context("pruning runs")?;
    let events = delete_in_batches(
        store,
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < $1 LIMIT $2)",
        before,
    )
    .await
    .context("pruning events")?;
    Ok(runs + events)
}

/// Run a `DELETE … LIMIT $2` statement (`$1` = a time) until it deletes
/// less than a batch.
async fn delete_in_batches(store: &PostgresStore, sql: &str, time: i64) -> StoreResult<u64> {
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(sql)
            .bind(time)
            .bind(DELETE_BATCH)
            .execute(&store.pool)
            .await?
            .rows_affected();
        deleted += batch;
        if batch < DELETE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}
