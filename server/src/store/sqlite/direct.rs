//! The engine's hot transactions (claims and the executor's write batches) run
//! on the writer's SQLite handle directly, on the calling thread, through
//! rusqlite.
//!
//! Why: through sqlx every statement is a hand-off to the connection's worker
//! thread and back, and on a busy node the task waiting for the answer queues
//! behind hundreds of running steps before it sends the next statement. The
//! writer then sat idle about 40 % of the time it was held, and it is the one
//! resource every claim and every run end needs. Locked out of sqlx's worker,
//! a whole transaction runs without a single hand-off, as plain per-row
//! statements prepared once per hold of the handle: no JSON shredding either.
//! (Not kept across holds: sqlx may close and reopen the writer, and a
//! statement must not outlive its handle. The engine's writer holds the
//! handle for many transactions in a row, see [`super::turn`].)
//!
//! The transaction blocks the calling thread while it runs (some 20 µs per
//! claimed task, a few milliseconds for a batch): the engine's writer runs on
//! a thread of its own (`engine/committer.rs`), so API requests, live-view
//! sessions and running steps never wait behind it. Everything else in the
//! store stays on sqlx: it is not on the hot path.

use crate::store::{Priority, RunResult, StoreResult, Task, TaskStatus};
use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, Transaction, TransactionBehavior};
use serde_json::Map;
use sqlx::sqlite::SqliteConnection;

use super::rows::{parse, time};
use super::writer_time::{self, Part};
use std::time::Instant;

/// Statements kept prepared while the handle is held: more than the hot
/// transactions use (a claim a dozen, the executor's writes seven), so that a
/// hold serving many of them prepares each once.
const HOT_STATEMENTS: usize = 32;

/// Run `work` on the connection's own SQLite handle. It runs synchronously on
/// this thread while sqlx's worker for the connection waits; `work` must
/// leave no transaction open (use [`rusqlite::Transaction`], which rolls back
/// when dropped).
pub(super) async fn with_handle<R>(
    conn: &mut SqliteConnection,
    work: impl FnOnce(&Connection) -> anyhow::Result<R>,
) -> StoreResult<R> {
    let mut locked = conn
        .lock_handle()
        .await
        .context("locking the writer's SQLite handle")?;
    let held_since = Instant::now();
    let raw = locked.as_raw_handle();
    // SAFETY (the one unsafe block of the store): `locked` gives this thread exclusive use of the handle until it
    // is dropped, after `db`. `from_handle` never closes the handle; dropping
    // `db` only finalizes the statements it prepared.
    #[allow(unsafe_code)]
    let db = unsafe { Connection::from_handle(raw.as_ptr()) }
        .context("using the writer's SQLite handle")?;
    db.set_prepared_statement_cache_capacity(HOT_STATEMENTS);
    let result = work(&db);
    drop(db);
    drop(locked);
    writer_time::add(Part::Held, held_since);
    Ok(result?)
}

/// Run `work` with foreign-key checks and CHECK constraints off, and turn
/// them back on however it ends (a panic included).
///
/// Why off: the foreign-key checks were about a tenth of the engine's
/// throughput (every run and step-run insert looked its parent up again;
/// deleting checkpoints walked the constraint machinery per row), and in the
/// hot transactions they can find nothing: a claim inserts runs for tasks it
/// has just read and step runs for runs it has just inserted; the executor's
/// writes update no key and delete nothing. Each CHECK that lists more than
/// two states (`status IN (…)`) built a temporary b-tree of its list for every
/// row inserted or updated (about a twentieth of the writer's time), and the
/// hot statements write only the texts of the Rust enums in `model.rs`, which
/// are exactly those lists. Every other transaction keeps both, and
/// `store/tests/sqlite.rs` runs `PRAGMA foreign_key_check` after a claim and
/// a batch of run ends.
///
/// Once per hold of the handle, not per transaction: switching either pragma
/// expires every prepared statement, and SQLite would compile each again at
/// its next use (that was a tenth of the writer's time).
pub(super) fn without_checks<R>(
    db: &Connection,
    work: impl FnOnce() -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    // No-ops inside a transaction: `work` must open its own.
    db.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA ignore_check_constraints = ON")?;
    let _restore = ChecksBackOn(db);
    work()
}

/// Run `work` in one IMMEDIATE transaction and commit it; on an error it is
/// rolled back. Inside [`without_checks`] for the hot transactions.
pub(super) fn hot_transaction<R>(
    db: &Connection,
    work: impl FnOnce(&Transaction) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    let result = work(&tx)?;
    let committing = Instant::now();
    tx.commit().context("committing")?;
    writer_time::add(Part::Commit, committing);
    Ok(result)
}

struct ChecksBackOn<'a>(&'a Connection);

impl Drop for ChecksBackOn<'_> {
    fn drop(&mut self) {
        let on = "PRAGMA foreign_keys = ON; PRAGMA ignore_check_constraints = OFF";
        if let Err(error) = self.0.execute_batch(on) {
            tracing::error!("turning foreign keys and CHECK constraints back on failed: {error}");
        }
    }
}

/// Milliseconds since the epoch back into a time.
fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
}

/// How many columns [`task_from_row`] reads: those of `task_columns!`.
pub(super) const TASK_COLUMNS: usize = count_columns(super::rows::task_columns!());

/// Columns in a comma-separated list (none of them holds a comma).
const fn count_columns(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut i, mut columns) = (0, 1);
    while i < bytes.len() {
        if bytes[i] == b',' {
            columns += 1;
        }
        i += 1;
    }
    columns
}

/// A task row selected or returned with [`super::rows::task_columns`], in
/// that column order, without its children.
pub(super) fn task_from_row(row: &Row) -> anyhow::Result<Task> {
    let status: String = row.get(3)?;
    let last_result: Option<String> = row.get(12)?;
    Ok(Task {
        id: row.get(0)?,
        name: row.get(1)?,
        code: row.get(2)?,
        status: parse::<TaskStatus>(&status)?,
        priority: Priority::from_rank(row.get(4)?),
        start_at: opt_time(row.get(5)?),
        run_interval: row.get(6)?,
        cron: row.get(19)?,
        timezone: row.get(20)?,
        max_execution_time: row.get(7)?,
        max_attempts: row.get(8)?,
        attempts: row.get(9)?,
        progress: row.get(10)?,
        message: row.get(11)?,
        last_result: last_result.as_deref().map(parse::<RunResult>).transpose()?,
        last_run_at: opt_time(row.get(13)?),
        next_run_at: opt_time(row.get(14)?),
        created_by: row.get(15)?,
        details: Map::new(),
        secret_names: Vec::new(),
        current_run_id: row.get(16)?,
        hook_url: row.get(21)?,
        max_starts_per_minute: row.get(22)?,
        created_at: time(row.get(17)?),
        updated_at: time(row.get(18)?),
        steps: Vec::new(),
        next_runs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SqliteStore};

    async fn count_blobs(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM module_blobs")
            .fetch_one(&store.writer)
            .await
            .expect("count")
    }

    /// A direct transaction that fails leaves nothing behind, and the writer
    /// goes on serving sqlx and direct writes alike (no transaction left open,
    /// the handle not closed).
    #[tokio::test]
    async fn a_failed_direct_transaction_rolls_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Full)
            .await
            .expect("open");
        let insert =
            "INSERT INTO module_blobs (hash, bytes, size, created_at) VALUES (?1, x'00', 1, 0)";
        let mut conn = store.writer.acquire().await.expect("writer");
        let failed = with_handle(&mut conn, |db| {
            let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
            tx.execute(insert, ["a"])?;
            // The primary key refuses the second row: the whole transaction goes.
            tx.execute(insert, ["a"])?;
            tx.commit()?;
            Ok(())
        })
        .await;
        assert!(failed.is_err(), "the duplicate key must fail");
        drop(conn);
        assert_eq!(count_blobs(&store).await, 0, "rolled back");

        sqlx::query(
            "INSERT INTO module_blobs (hash, bytes, size, created_at) VALUES ('b', x'00', 1, 0)",
        )
        .execute(&store.writer)
        .await
        .expect("sqlx writes after a failed direct transaction");
        let mut conn = store.writer.acquire().await.expect("writer");
        with_handle(&mut conn, |db| {
            let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
            tx.execute(insert, ["c"])?;
            tx.commit()?;
            Ok(())
        })
        .await
        .expect("a direct write after it");
        drop(conn);
        assert_eq!(count_blobs(&store).await, 2);
    }
}
