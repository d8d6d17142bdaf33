//! An API request's transaction on the engine's hot connection (a waited
//! create, a create and claim): on a blocking thread, so the request's
//! runtime never waits on SQLite, and under the store's write lock, as every
//! use of the hot connection must be (see `direct.rs`).

use super::counts::TaskMoves;
use super::direct::{Relaxed, hot_transaction};
use super::{Durability, SqliteStore};
use crate::store::StoreResult;
use anyhow::Context;
use rusqlite::Transaction;

/// Run `work` in one hot transaction and commit it. With `deferred` and the
/// store at FULL the commit is not synced: it is counted as deferred (see
/// `HotConnection::deferred_committed`) and the next synced commit covers
/// it. Otherwise it is synced as the store is set.
///
/// The outer error is the write lock or the blocking thread; the inner one is
/// the transaction's, which was rolled back, so the caller may try another
/// way.
pub(super) async fn hot_request<R: Send + 'static>(
    store: &SqliteStore,
    deferred: bool,
    what: &'static str,
    work: impl FnOnce(&Transaction, &mut TaskMoves) -> anyhow::Result<R> + Send + 'static,
) -> StoreResult<anyhow::Result<R>> {
    // At NORMAL nothing is synced, so nothing is deferred either.
    let deferred = deferred && store.durability == Durability::Full;
    let write_lock = store.writer.acquire().await?;
    let hot = store.hot.clone();
    let done = tokio::task::spawn_blocking(move || {
        // Held until the transaction is over, even if the caller gives up.
        let _write_lock = write_lock;
        hot.with(|db, hold| {
            if !deferred {
                let done = hot_transaction(db, work)?;
                hold.committed = true;
                return Ok(done);
            }
            let done = {
                let _relaxed = Relaxed::on(db, &mut hold.full_again)?;
                hot_transaction(db, work)?
            };
            hot.deferred_committed();
            Ok(done)
        })
    })
    .await
    .with_context(|| format!("{what} on the engine's write connection"))?;
    Ok(done)
}
