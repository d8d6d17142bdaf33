//! Creates answered only after their run (`POST /tasks?wait=`, see
//! `Store::create_tasks_deferred`) commit without waiting for their WAL to
//! reach the disk: `synchronous_commit` is off for that statement alone.
//!
//! Nothing acknowledged is lost by it. PostgreSQL writes one WAL, in order,
//! and a synchronous commit waits until the WAL is flushed up to its own
//! commit record, so every commit before it is then on disk too. The run's
//! end, which is synchronous, comes after the create: once it is committed
//! the create is durable with it. Only when the answer comes without such
//! a commit on this node (the wait ran out, another node ran the task) does
//! [`DeferredCreates`] say so, and the answer first writes a WAL record with
//! a synchronous commit of its own ([`SYNC_SQL`]).
//!
//! What the counting must get right: a commit covers the deferred creates
//! that had committed before it began, and only a commit that wrote
//! something waits for the flush (a statement that changed no row commits
//! without one).

use super::PostgresStore;
use crate::store::StoreResult;
use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};

/// A CTE (`relaxed`) that turns `synchronous_commit` off for its statement's
/// own transaction: the statement must join it (`relaxed CROSS JOIN …`) so
/// that it runs first. It saves the round trip of a `SET LOCAL`.
pub(super) const RELAXED_CTE: &str =
    "relaxed AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))";

/// A transactional WAL record (a logical decoding message, which any role
/// may write and nothing reads back): its commit waits for the flush.
pub(super) const SYNC_SQL: &str =
    "SELECT pg_logical_emit_message(true, 'stepwise', 'deferred creates synced')::text";

/// Deferred creates committed on this node, and how many of them a
/// synchronous commit that wrote has since made durable.
#[derive(Debug, Default)]
pub(super) struct DeferredCreates {
    committed: AtomicU64,
    covered: AtomicU64,
}

impl DeferredCreates {
    /// A deferred create has committed.
    pub(super) fn committed(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    /// Taken before a synchronous commit begins: what it will cover (pass it
    /// to [`DeferredCreates::covered_by`] once it committed having written).
    pub(super) fn mark(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// A synchronous commit that wrote, begun at `mark`, succeeded.
    pub(super) fn covered_by(&self, mark: u64) {
        self.covered.fetch_max(mark, Ordering::SeqCst);
    }

    /// Whether some deferred create is not yet known to be on disk.
    pub(super) fn uncovered(&self) -> bool {
        self.covered.load(Ordering::SeqCst) < self.committed.load(Ordering::SeqCst)
    }
}

/// Make every deferred create committed so far durable, if some may not be
/// yet: a synchronous commit of a WAL record of its own ([`SYNC_SQL`]).
pub(super) async fn sync(store: &PostgresStore) -> StoreResult<()> {
    if !store.deferred.uncovered() {
        return Ok(());
    }
    let mark = store.deferred.mark();
    sqlx::query(SYNC_SQL)
        .execute(&store.pool)
        .await
        .context("syncing the write-ahead log")?;
    store.deferred.covered_by(mark);
    Ok(())
}
