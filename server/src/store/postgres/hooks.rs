//! The completion hooks' queue (see SQLite's `hooks.rs`). Nodes share it:
//! a claim takes rows with `FOR UPDATE SKIP LOCKED`, so two nodes claiming
//! at once get different deliveries, and each claim moves its rows'
//! `next_attempt_at` to the end of its lease, so no other node takes them
//! again unless the claimer dies before it records the try.

use super::PostgresStore;
use super::rows::ms;
use crate::store::row_mapping::{
    DUE_HOOK_SELECT, HOOK_ATTEMPT_COLUMNS, HOOK_DELIVERY_COLUMNS, attach_hook_attempts,
    due_hook_from_row, hook_attempt_from_row, hook_delivery_from_row,
};
use crate::store::{DueHook, HookAttempt, HookDelivery, HookNext, StoreError, StoreResult};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

pub(super) async fn claim(
    store: &PostgresStore,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<DueHook>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.pool.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE hook_deliveries SET attempts = attempts + 1, claimed_by = $1, next_attempt_at = $3 \
         WHERE id IN (SELECT id FROM hook_deliveries WHERE status = 'pending' \
                      AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $4 \
                      FOR UPDATE SKIP LOCKED) \
         RETURNING id",
    )
    .bind(node)
    .bind(ms(now))
    .bind(ms(lease_until))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
    .context("claiming hook deliveries")?;
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let sql = DUE_HOOK_SELECT.replace("{ids}", "SELECT unnest($1::bigint[])");
    let rows = sqlx::query(&sql)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .context("reading claimed hook deliveries")?;
    let due = rows
        .iter()
        .map(due_hook_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    tx.commit().await?;
    Ok(due)
}

pub(super) async fn record_attempt(
    store: &PostgresStore,
    delivery_id: i64,
    attempt: &HookAttempt,
    next: HookNext,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let (status, next_at, finished_at) = match next {
        HookNext::Delivered => ("delivered", None, Some(ms(now))),
        HookNext::RetryAt(at) => ("pending", Some(ms(at)), None),
        HookNext::GiveUp => ("failed", None, Some(ms(now))),
    };
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "INSERT INTO hook_attempts (delivery_id, attempt, node, started_at, duration_ms, \
                status_code, error) \
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM hook_deliveries WHERE id = $1)",
    )
    .bind(delivery_id)
    .bind(attempt.attempt)
    .bind(&attempt.node)
    .bind(ms(attempt.started_at))
    .bind(attempt.duration_ms)
    .bind(attempt.status_code)
    .bind(&attempt.error)
    .execute(&mut *tx)
    .await
    .context("recording a hook try")?;
    let moved = sqlx::query(
        "UPDATE hook_deliveries SET status = $3, next_attempt_at = $4, finished_at = $5, \
                claimed_by = NULL \
         WHERE id = $1 AND attempts = $2 AND status = 'pending'",
    )
    .bind(delivery_id)
    .bind(attempt.attempt)
    .bind(status)
    .bind(next_at)
    .bind(finished_at)
    .execute(&mut *tx)
    .await
    .context("moving a hook delivery on")?
    .rows_affected();
    tx.commit().await?;
    Ok(moved == 1)
}

pub(super) async fn list(
    store: &PostgresStore,
    task_id: i64,
    run_ids: &[i64],
) -> StoreResult<Vec<HookDelivery>> {
    let mut conn = store.pool.acquire().await?;
    load(&mut conn, task_id, run_ids, "run_id").await
}

/// The task's deliveries whose `column` (run_id or id) is in `ids`, with
/// their tries.
async fn load(
    conn: &mut PgConnection,
    task_id: i64,
    ids: &[i64],
    column: &str,
) -> StoreResult<Vec<HookDelivery>> {
    let rows = sqlx::query(&format!(
        "SELECT {HOOK_DELIVERY_COLUMNS} FROM hook_deliveries \
         WHERE task_id = $1 AND {column} = ANY($2) ORDER BY run_id, id"
    ))
    .bind(task_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading hook deliveries")?;
    let mut deliveries = rows
        .iter()
        .map(hook_delivery_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if deliveries.is_empty() {
        return Ok(deliveries);
    }
    let delivery_ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let rows = sqlx::query(&format!(
        "SELECT {HOOK_ATTEMPT_COLUMNS} FROM hook_attempts \
         WHERE delivery_id = ANY($1) ORDER BY delivery_id, id"
    ))
    .bind(&delivery_ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading hook tries")?;
    let attempts = rows
        .iter()
        .map(hook_attempt_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    attach_hook_attempts(&mut deliveries, attempts);
    Ok(deliveries)
}

pub(super) async fn retry(
    store: &PostgresStore,
    task_id: i64,
    delivery_id: i64,
    now: DateTime<Utc>,
) -> StoreResult<HookDelivery> {
    let mut tx = store.pool.begin().await?;
    // Locked: a claim on another node cannot take it between the check and the update.
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM hook_deliveries WHERE id = $1 AND task_id = $2 FOR UPDATE",
    )
    .bind(delivery_id)
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await?;
    match status.as_deref() {
        None => {
            return Err(StoreError::NotFound(format!(
                "hook delivery {delivery_id} of task {task_id}"
            )));
        }
        Some("pending") => return Err(crate::store::hook_still_pending(delivery_id)),
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE hook_deliveries SET status = 'pending', retry_from = attempts, \
                next_attempt_at = $2, finished_at = NULL, claimed_by = NULL WHERE id = $1",
    )
    .bind(delivery_id)
    .bind(ms(now))
    .execute(&mut *tx)
    .await
    .context("retrying a hook delivery")?;
    let mut found = load(&mut tx, task_id, &[delivery_id], "id").await?;
    tx.commit().await?;
    found
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("hook delivery {delivery_id}")))
}
