//! Runs after the claim: leases, rescue queries and run history. The
//! executor's writes are in [`super::writes`].

use super::PostgresStore;
use super::rows::{
    Kin, RUN_COLUMNS, load_children, load_step_runs, ms, run_from_row, task_columns, task_from_row,
};
use crate::store::{Run, StoreError, StoreResult, Task};
use chrono::{DateTime, Utc};

/// Whether a cancel was requested for the task this run belongs to, while the
/// task is still on this run (`false` once the run is over or taken back).
pub(super) async fn cancel_requested(store: &PostgresStore, run_id: i64) -> StoreResult<bool> {
    let row: Option<(bool, Option<i64>)> = sqlx::query_as(
        "SELECT t.cancel_requested, t.current_run_id FROM runs AS r JOIN tasks AS t ON t.id = r.task_id \
         WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_optional(&store.pool)
    .await?;
    match row {
        None => Err(StoreError::NotFound(format!("run {run_id}"))),
        Some((requested, current)) => Ok(requested && current == Some(run_id)),
    }
}

/// One conditional UPDATE: a lease is extended only while the task is still
/// running on that run under this node's lease (a rescuer on another node
/// that took the task back wins, whichever commits first).
///
/// Rows another transaction holds right now (this node's writer ending the
/// run, say) are skipped (`SKIP LOCKED`) rather than waited for: waiting
/// could deadlock with a writer that locks the same tasks in another order,
/// and a lease is many heartbeats long, so missing one beat costs nothing
/// (nor does seeing a cancel one beat later).
pub(super) async fn heartbeat(
    store: &PostgresStore,
    node: &str,
    run_ids: &[i64],
    lease_until: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let cancelled: Vec<Option<i64>> = sqlx::query_scalar(
        "UPDATE tasks SET lease_expires_at = $3 \
         WHERE id IN (SELECT id FROM tasks \
                      WHERE id IN (SELECT task_id FROM runs WHERE id = ANY($1)) \
                        AND current_run_id = ANY($1) AND status = 'running' AND lease_owner = $2 \
                      FOR UPDATE SKIP LOCKED) \
         RETURNING CASE WHEN cancel_requested THEN current_run_id END",
    )
    .bind(run_ids)
    .bind(node)
    .bind(ms(lease_until))
    .fetch_all(&store.pool)
    .await?;
    Ok(cancelled.into_iter().flatten().collect())
}

pub(super) async fn expired_runs(
    store: &PostgresStore,
    now: DateTime<Utc>,
    node: Option<&str>,
) -> StoreResult<Vec<(Task, i64)>> {
    let mut conn = store.pool.acquire().await?;
    let rows = match node {
        Some(node) => {
            sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE status = 'running' AND lease_owner = $1 ORDER BY id"
            ))
            .bind(node)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE status = 'running' AND lease_expires_at < $1 ORDER BY id"
            ))
            .bind(ms(now))
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut tasks = rows
        .iter()
        .map(task_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kin = Kin::unknown(&tasks);
    load_children(&mut conn, &mut tasks, false, &kin).await?;
    Ok(tasks
        .into_iter()
        .filter_map(|task| task.current_run_id.map(|run_id| (task, run_id)))
        .collect())
}

pub(super) async fn list_runs(
    store: &PostgresStore,
    task_id: i64,
    limit: i64,
) -> StoreResult<Vec<Run>> {
    let mut conn = store.pool.acquire().await?;
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE task_id = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(task_id)
    .bind(limit.max(0))
    .fetch_all(&mut *conn)
    .await?;
    let mut runs = rows
        .iter()
        .map(run_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    load_step_runs(&mut conn, &mut runs).await?;
    Ok(runs)
}

/// Durations in seconds of the task's last `limit` completed runs, newest first.
pub(super) async fn recent_run_durations(
    store: &PostgresStore,
    task_id: i64,
    limit: i64,
) -> StoreResult<Vec<f64>> {
    Ok(sqlx::query_scalar(
        "SELECT (finished_at - started_at)::float8 / 1000 FROM runs \
         WHERE task_id = $1 AND status = 'completed' AND finished_at IS NOT NULL \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(task_id)
    .bind(limit.max(0))
    .fetch_all(&store.pool)
    .await?)
}
