//! The engine's hot transactions (claims and the executor's write batches,
//! and the API's plain creates) run through rusqlite on a connection of
//! their own, [`HotConnection`], on the calling thread.
//!
//! Why not sqlx: through sqlx every statement is a hand-off to the
//! connection's worker thread and back, and on a busy node the task waiting
//! for the answer queues behind hundreds of running steps before it sends the
//! next statement. The writer then sat idle about 40 % of the time it was
//! held, and it is the one resource every claim and every run end needs.
//! Here a whole transaction runs without a single hand-off, as plain per-row
//! statements: no JSON shredding either.
//!
//! Why a connection of their own: its statements stay prepared for as long
//! as it is open, and it runs with foreign-key checks and CHECK constraints
//! off for good (see [`HotConnection::open`]). On the store's sqlx writer the
//! hot transactions had to switch both off and on again around every hold,
//! and a switch expires every prepared statement: each hold compiled the
//! claim's statements again, which on an idle node was most of a claim's
//! time. Two connections that write must never wait on each other's locks
//! (SQLite's busy handler sleeps for milliseconds): the hot connection is
//! used only while the caller holds the store's one sqlx writer connection,
//! which is the store's write lock (see `turn.rs`).
//!
//! The transaction blocks the calling thread while it runs (some 20 µs per
//! claimed task, a few milliseconds for a batch): the engine's writer runs on
//! a thread of its own (`sqlite/group_commit.rs`), so API requests, live-view
//! sessions and running steps never wait behind it. Everything else in the
//! store stays on sqlx: it is not on the hot path.

use crate::store::{Priority, RunResult, Task, TaskStatus};
use anyhow::Context;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Row, Transaction, TransactionBehavior};
use serde_json::Map;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::counts::{self, TaskMoves};
use super::rows::{parse, time};
use super::writer_time::{self, Part};
use std::time::Instant;

/// Statements kept prepared: more than the hot transactions use (a claim a
/// dozen, the executor's writes seven).
const HOT_STATEMENTS: usize = 32;

/// The hot connection's lookaside: slots of this many bytes ...
const LOOKASIDE_SLOT: i32 = 1200;
/// ... and this many of them (1.2 MB). SQLite serves a connection's small
/// allocations (cursors, records being built, values) from its lookaside
/// before it calls `malloc`. The default (40 slots) is taken for good by the
/// dozens of statements this connection keeps prepared, so every row the
/// writer read or wrote went to the C allocator: with room to spare, the
/// writer spent markedly less per task (see BENCHMARKS.md, session 26).
const LOOKASIDE_SLOTS: i32 = 1000;

/// The engine's own write connection (see the module docs). Opened with the
/// store; reopened if its settings could not be put back (see [`Hold`]).
pub(super) struct HotConnection {
    path: PathBuf,
    /// Its write-ahead log (`<path>-wal`).
    wal: PathBuf,
    synchronous: &'static str,
    conn: Mutex<Option<Connection>>,
    /// Creates committed without an fsync so far, counted (see
    /// [`HotConnection::deferred_committed`]).
    deferred: AtomicU64,
    /// How many of those a synced commit has since made durable.
    covered: AtomicU64,
}

/// What `work` tells [`HotConnection::with`] about its hold.
pub(super) struct Hold<'a> {
    /// The store's write-ahead log, for [`Hold::sync_wal`].
    wal: &'a Path,
    /// `synchronous` is back at the store's setting (see [`Relaxed`]). If
    /// not, the connection is closed and the next hold opens a fresh one.
    pub full_again: bool,
    /// A commit outside [`Relaxed`] succeeded. With the store at FULL it
    /// made every commit before it durable, deferred creates included
    /// (SQLite's WAL is one file, written in order, and its fsync covers
    /// all of it).
    pub committed: bool,
}

impl Hold<'_> {
    /// Make every commit so far durable (a commit made under [`Relaxed`]
    /// included): SQLite's WAL is one file, written in order, and its fsync
    /// covers all of it.
    pub(super) fn sync_wal(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        sync_file(self.wal).context("syncing the write-ahead log")?;
        writer_time::add(Part::Sync, started);
        self.committed = true;
        Ok(())
    }
}

/// fsync `file`'s data; a file that does not exist has nothing to sync.
/// Opened anew each time rather than kept open: SQLite may delete and make
/// the WAL again (when its last connection closes), and an fsync through a
/// handle to the old file would make nothing durable.
pub(super) fn sync_file(file: &Path) -> std::io::Result<()> {
    match std::fs::File::open(file) {
        Ok(file) => file.sync_data(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

impl HotConnection {
    /// `synchronous` as the store is configured (`FULL` or `NORMAL`).
    pub(super) fn open(path: &Path, synchronous: &'static str) -> anyhow::Result<Self> {
        let mut wal = path.to_path_buf().into_os_string();
        wal.push("-wal");
        let hot = HotConnection {
            path: path.to_path_buf(),
            wal: PathBuf::from(wal),
            synchronous,
            conn: Mutex::new(None),
            deferred: AtomicU64::new(0),
            covered: AtomicU64::new(0),
        };
        *hot.conn.lock() = Some(hot.connect()?);
        Ok(hot)
    }

    /// Foreign-key checks and CHECK constraints are off on this connection.
    /// The foreign-key checks were about a tenth of the engine's throughput
    /// (every run and step-run insert looked its parent up again; deleting
    /// checkpoints walked the constraint machinery per row), and in the hot
    /// transactions they can find nothing: a claim inserts runs for tasks it
    /// has just read and step runs for runs it has just inserted; the
    /// executor's writes update no key and delete nothing. Each CHECK that
    /// lists more than two states (`status IN (…)`) built a temporary b-tree
    /// of its list for every row inserted or updated (about a twentieth of
    /// the writer's time), and the hot statements write only the texts of the
    /// Rust enums in `model.rs`, which are exactly those lists. Every other
    /// transaction (on sqlx) keeps both, and `store/tests/sqlite.rs` runs
    /// `PRAGMA foreign_key_check` after a claim and a batch of run ends.
    fn connect(&self) -> anyhow::Result<Connection> {
        let db = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} for the engine's writes", self.path.display()))?;
        set_lookaside(&db);
        db.execute_batch(&format!(
            "PRAGMA synchronous = {}; PRAGMA foreign_keys = OFF; \
             PRAGMA ignore_check_constraints = ON; PRAGMA temp_store = memory; \
             PRAGMA busy_timeout = 10000",
            self.synchronous
        ))
        .context("setting up the engine's write connection")?;
        db.set_prepared_statement_cache_capacity(HOT_STATEMENTS);
        Ok(db)
    }

    /// Run `work` on the connection, on this thread. The caller must hold the
    /// store's sqlx writer (the write lock). `work` must leave no transaction
    /// open: use [`hot_transaction`].
    pub(super) fn with<R>(
        &self,
        work: impl FnOnce(&Connection, &mut Hold) -> anyhow::Result<R>,
    ) -> anyhow::Result<R> {
        let held_since = Instant::now();
        let mut slot = self.conn.lock();
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        // Under the write lock: no deferred create commits during the hold
        // but through `work` itself.
        let deferred_before = self.deferred.load(Ordering::SeqCst);
        let mut hold = Hold {
            wal: &self.wal,
            full_again: true,
            committed: false,
        };
        let result = work(slot.as_ref().expect("connected above"), &mut hold);
        if hold.committed && self.synchronous == "FULL" {
            self.covered.fetch_max(deferred_before, Ordering::SeqCst);
        }
        if !hold.full_again {
            // Never let a later write commit without its fsync.
            *slot = None;
        }
        drop(slot);
        writer_time::add(Part::Held, held_since);
        result
    }

    /// A create committed without an fsync (inside [`HotConnection::with`]).
    pub(super) fn deferred_committed(&self) {
        self.deferred.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a deferred create is not yet covered by a synced commit.
    pub(super) fn uncovered(&self) -> bool {
        self.covered.load(Ordering::SeqCst) < self.deferred.load(Ordering::SeqCst)
    }

    /// Make every commit so far durable, without the write lock (see
    /// `wal_syncer.rs`, and `Store::sync_deferred`): the creates deferred
    /// before the fsync begins are covered by it.
    pub(super) fn sync_all(&self) -> anyhow::Result<()> {
        let deferred = self.deferred.load(Ordering::SeqCst);
        sync_file(&self.wal).context("syncing the write-ahead log")?;
        self.covered.fetch_max(deferred, Ordering::SeqCst);
        Ok(())
    }
}

/// Give a connection just opened the lookaside of [`LOOKASIDE_SLOTS`]. If
/// SQLite refuses (it may while the lookaside is in use), the connection
/// keeps its default: slower, not wrong.
fn set_lookaside(db: &Connection) {
    // SAFETY: the handle is this open connection's, used on this thread
    // only; a null buffer asks SQLite to allocate the slots itself, and the
    // variadic arguments are the (pointer, int, int) this option takes.
    #[allow(unsafe_code)]
    let code = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            db.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            LOOKASIDE_SLOT as std::ffi::c_int,
            LOOKASIDE_SLOTS as std::ffi::c_int,
        )
    };
    if code != rusqlite::ffi::SQLITE_OK {
        tracing::warn!(
            "the engine's write connection keeps SQLite's default lookaside (code {code})"
        );
    }
}

/// `synchronous=NORMAL` on the hot connection until dropped (an error or a
/// panic included), then FULL again; if that fails, `full_again` says so
/// and [`HotConnection::with`] closes the connection.
pub(super) struct Relaxed<'a> {
    db: &'a Connection,
    full_again: &'a mut bool,
}

impl<'a> Relaxed<'a> {
    pub(super) fn on(db: &'a Connection, full_again: &'a mut bool) -> anyhow::Result<Self> {
        db.execute_batch("PRAGMA synchronous = NORMAL")
            .context("relaxing the engine's write connection")?;
        Ok(Relaxed { db, full_again })
    }
}

impl Drop for Relaxed<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.db.execute_batch("PRAGMA synchronous = FULL") {
            tracing::error!("putting synchronous=FULL back failed: {error}");
            *self.full_again = false;
        }
    }
}

/// Run `work` in one IMMEDIATE transaction and commit it, with the task
/// counts of the moves `work` reports (see [`counts`]); on an error it is
/// rolled back.
pub(super) fn hot_transaction<R>(
    db: &Connection,
    work: impl FnOnce(&Transaction, &mut TaskMoves) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    let mut moves = TaskMoves::default();
    let result = work(&tx, &mut moves)?;
    counts::fold(&tx, &moves)?;
    let committing = Instant::now();
    tx.commit().context("committing")?;
    writer_time::add(Part::Commit, committing);
    Ok(result)
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

    /// A hot transaction that fails leaves nothing behind, and the store goes
    /// on serving sqlx and hot writes alike (no transaction left open).
    #[tokio::test]
    async fn a_failed_hot_transaction_rolls_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Full)
            .await
            .expect("open");
        let insert =
            "INSERT INTO module_blobs (hash, bytes, size, created_at) VALUES (?1, x'00', 1, 0)";
        let lock = store.writer.acquire().await.expect("writer");
        let failed = store.hot.with(|db, _| {
            hot_transaction(db, |tx, _| {
                tx.execute(insert, ["a"])?;
                // The primary key refuses the second row: the whole transaction goes.
                tx.execute(insert, ["a"])?;
                Ok(())
            })
        });
        assert!(failed.is_err(), "the duplicate key must fail");
        drop(lock);
        assert_eq!(count_blobs(&store).await, 0, "rolled back");

        sqlx::query(
            "INSERT INTO module_blobs (hash, bytes, size, created_at) VALUES ('b', x'00', 1, 0)",
        )
        .execute(&store.writer)
        .await
        .expect("sqlx writes after a failed hot transaction");
        let lock = store.writer.acquire().await.expect("writer");
        store
            .hot
            .with(|db, _| hot_transaction(db, |tx, _| Ok(tx.execute(insert, ["c"])?)))
            .expect("a hot write after it");
        drop(lock);
        assert_eq!(count_blobs(&store).await, 2);
    }
}
