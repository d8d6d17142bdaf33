//! Task counts by status, summed from `task_count_deltas` (migration 0011:
//! every statement that changes tasks appends how many it moved into and out
//! of each status), so that a count does not scan the tasks.

use super::PostgresStore;
use crate::store::{StatusCounts, StoreResult, status_counts};
use anyhow::Context;

const SUMS: &str =
    "SELECT status, sum(delta)::bigint, count(*) FROM task_count_deltas GROUP BY status";

/// Replaces the delta rows a transaction sees by one sum per status. Rows
/// appended meanwhile (invisible to it) stay; a node compacting at the same
/// time waits for this one's row locks and then skips the rows it deleted:
/// no delta is lost or counted twice.
const COMPACT: &str = "WITH seen AS (DELETE FROM task_count_deltas RETURNING status, delta) \
     INSERT INTO task_count_deltas (status, delta) \
     SELECT status, sum(delta) FROM seen GROUP BY status HAVING sum(delta) <> 0";

/// Delta rows a count reads before it compacts them: reading a few hundred
/// rows costs little, and compacting on every read would be a write (a WAL
/// flush) per poll of the dashboard.
pub(crate) const COMPACT_ABOVE: i64 = 512;

pub(super) async fn count_by_status(store: &PostgresStore) -> StoreResult<StatusCounts> {
    let sums: Vec<(String, i64, i64)> = sqlx::query_as(SUMS)
        .fetch_all(&store.pool)
        .await
        .context("summing the task counts")?;
    if sums.iter().map(|(_, _, rows)| rows).sum::<i64>() > COMPACT_ABOVE {
        compact(store).await;
    }
    Ok(status_counts(sums.iter().map(|(s, n, _)| (s.as_str(), *n))))
}

/// Compacts the delta rows; a failure only leaves more rows for the next
/// count to read (and compact), so it is logged, not returned.
async fn compact(store: &PostgresStore) {
    if let Err(error) = sqlx::query(COMPACT).execute(&store.pool).await {
        tracing::warn!("compacting the task counts failed: {error}; the next count tries again");
    }
}
