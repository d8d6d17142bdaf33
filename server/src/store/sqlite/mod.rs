//! The SQLite store: one node, one database file.
//!
//! SQLite allows one writer at a time, so every write transaction goes through
//! a pool of exactly one connection: writes queue in the process instead of
//! failing with `SQLITE_BUSY`, and a transaction that reads then writes sees
//! no interleaved writer. Reads use a separate pool of read-only connections,
//! which WAL mode lets run alongside the writer.
//!
//! A second server on the same file is refused with an exclusive advisory lock
//! on `<file>.lock`, held for the store's lifetime.

mod actions;
mod artifacts;
mod at_hand;
mod blobs;
mod claim;
mod counts;
mod create_and_claim;
mod create_batch;
mod direct;
mod group_commit;
mod hooks;
mod hot_request;
mod limits;
mod nodes;
mod records;
mod rows;
mod runs;
mod stats;
mod steps;
mod tasks;
mod turn;
mod wal_syncer;
mod writer_time;
mod writes;

pub use writer_time::WriterTime;

use crate::store::*;
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqlitePool};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use turn::ClaimDue;
#[cfg(test)]
pub(crate) use turn::{ClaimDue as TurnClaim, WriterTurn, WriterTurns};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How hard a commit works to survive a power loss (`PRAGMA synchronous`,
/// in WAL mode). Either way the database is never corrupted, and a crash of
/// the Stepwise process alone (not of the machine) loses nothing committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit waits until the WAL is on disk, so a
    /// power loss or OS crash loses nothing that was committed. Costs one
    /// fsync per write transaction (milliseconds on many disks), which bounds
    /// write transactions per second: batch writes to go faster.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is synced only at checkpoints (about every
    /// 4 MB of WAL). A power loss or OS crash may roll back the transactions
    /// committed since then (the OS usually writes them out within ~30 s): a
    /// run may be claimed again and its steps re-run, a finished run may come
    /// back as running and be rescued, recent logs may vanish. Commits are
    /// much cheaper.
    Normal,
}

/// See the module docs.
pub struct SqliteStore {
    /// Exactly one connection: all write transactions.
    writer: SqlitePool,
    /// Read-only connections for plain reads.
    reader: SqlitePool,
    /// The engine's hot transactions, used only while `writer` is held (see
    /// [`direct`]).
    hot: Arc<direct::HotConnection>,
    durability: Durability,
    /// Holds the exclusive lock on `<file>.lock` until the store is dropped.
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

const READERS: u32 = 4;
const ROW_BUFFER: usize = 4096;

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, lock it against a
    /// second server, and apply pending migrations.
    pub async fn open(path: &Path, durability: Durability) -> anyhow::Result<SqliteStore> {
        let lock = lock_file(path)?;
        let synchronous = match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            // Rows come back from sqlx's connection thread over a bounded
            // channel; at the default 50 a claim of a few hundred rows stalls
            // that thread and wakes the caller row by row.
            .row_buffer_size(ROW_BUFFER)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        migrate(&options, path, synchronous).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // A local file cannot hang up: the ping would only cost each
            // write a round trip to the connection's thread.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, counts::WRITER_TRIGGERS).await?;
                    Ok(())
                })
            })
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous),
            )
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            // A local file cannot hang up (as for the writer).
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("opening database {} for reading", path.display()))?;
        let hot = Arc::new(direct::HotConnection::open(
            path,
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?);
        Ok(SqliteStore {
            writer,
            reader,
            hot,
            durability,
            _lock: lock,
        })
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Whether a deferred create is not yet known to be on disk.
    pub(crate) fn deferred_uncovered(&self) -> bool {
        self.hot.uncovered()
    }

    /// `PRAGMA synchronous` of the sqlx writer and of the hot connection
    /// (2 = FULL, 1 = NORMAL).
    pub(crate) async fn writer_synchronous(&self) -> (i64, i64) {
        let writer = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await
            .expect("read synchronous");
        let _write_lock = self.writer.acquire().await.expect("writer");
        let hot = self
            .hot
            .with(|db, _| Ok(db.query_row("PRAGMA synchronous", [], |row| row.get(0))?))
            .expect("read the hot connection's synchronous");
        (writer, hot)
    }

    /// Checkpoint the WAL into the database and truncate it to nothing, so
    /// that its size afterwards is what the next writes wrote.
    pub(crate) async fn truncate_wal(&self) {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
            .expect("checkpoint the WAL");
    }

    /// Break the steps of task `task_id` (their settings are no longer
    /// JSON), so that claiming it fails: how tests make a claim fail.
    pub(crate) async fn break_steps_of(&self, task_id: i64) {
        sqlx::query("UPDATE steps SET settings = 'not json' WHERE task_id = ?1")
            .bind(task_id)
            .execute(&self.writer)
            .await
            .expect("break steps");
    }

    /// Try to give task `task_id` a status no Rust enum has (the CHECK
    /// constraint must refuse it).
    pub(crate) async fn break_status_of(&self, task_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE tasks SET status = 'lost' WHERE id = ?1")
            .bind(task_id)
            .execute(&self.writer)
            .await
            .map(|_| ())
    }

    /// Whether the writer connection enforces CHECK constraints.
    pub(crate) async fn writer_checks_constraints(&self) -> bool {
        let ignored: i64 = sqlx::query_scalar("PRAGMA ignore_check_constraints")
            .fetch_one(&self.writer)
            .await
            .expect("read ignore_check_constraints");
        ignored == 0
    }

    /// The writer connection's `PRAGMA foreign_keys`, and the rows that
    /// break a foreign key anywhere in the database.
    pub(crate) async fn writer_foreign_keys(&self) -> (i64, usize) {
        let on = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&self.writer)
            .await
            .expect("read foreign_keys");
        let broken = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&self.writer)
            .await
            .expect("foreign_key_check");
        (on, broken.len())
    }
}

/// Apply pending migrations on a connection of their own, with foreign keys
/// off: a migration that rebuilds a table (SQLite's way to change one, e.g.
/// migration 0004) drops the old table, which with foreign keys on would
/// cascade to the rows that refer to it. Every foreign key is checked
/// afterwards, so a migration cannot leave a row without its parent.
async fn migrate(
    options: &SqliteConnectOptions,
    path: &Path,
    synchronous: SqliteSynchronous,
) -> anyhow::Result<()> {
    let mut conn = options
        .clone()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(false)
        .connect()
        .await
        .with_context(|| format!("opening database {}", path.display()))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .with_context(|| format!("migrating database {}", path.display()))?;
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .with_context(|| format!("checking foreign keys of {}", path.display()))?;
    if !broken.is_empty() {
        anyhow::bail!(
            "database {} has {} rows whose parent row is missing after migrating; \
             restore it from a backup and report this as a bug",
            path.display(),
            broken.len()
        );
    }
    conn.close().await?;
    Ok(())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Take the exclusive advisory lock that keeps a second server off this file.
fn lock_file(path: &Path) -> anyhow::Result<File> {
    let lock_path = lock_path(path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("creating lock file {}", lock_path.display()))?;
    let locked = fs4::fs_std::FileExt::try_lock_exclusive(&file)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if !locked {
        anyhow::bail!(
            "another Stepwise server is already using {}; stop it or pass a different --data-dir",
            path.display()
        );
    }
    Ok(file)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_task(&self, task: NewTask, now: DateTime<Utc>) -> StoreResult<(Task, bool)> {
        tasks::create(self, task, now).await
    }

    async fn create_tasks(
        &self,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<(Task, bool)>>> {
        tasks::create_many(self, tasks, now, false).await
    }

    async fn create_tasks_deferred(
        &self,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<(Task, bool)>>> {
        tasks::create_many(self, tasks, now, true).await
    }

    async fn create_and_claim(
        &self,
        task: NewTask,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<(Task, Option<ClaimedRun>)> {
        create_and_claim::create_and_claim(self, task, node, now, lease_until).await
    }

    /// Deferred creates are in the WAL, written in order: an fsync of the
    /// WAL file makes them durable (and a checkpoint that moved them into
    /// the database file synced that file first).
    async fn sync_deferred(&self) -> StoreResult<()> {
        if !self.hot.uncovered() {
            return Ok(());
        }
        let hot = self.hot.clone();
        tokio::task::spawn_blocking(move || hot.sync_all())
            .await
            .context("syncing the write-ahead log")??;
        Ok(())
    }

    async fn get_task(&self, id: i64) -> StoreResult<Option<Task>> {
        tasks::get(self, id).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        tasks::list(self, filter).await
    }

    async fn update_task(
        &self,
        id: i64,
        patch: &TaskPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        tasks::update(self, id, patch, now).await
    }

    async fn edit_steps(
        &self,
        task_id: i64,
        edit: &StepEdit,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        steps::edit(self, task_id, edit, now).await
    }

    async fn delete_task(&self, id: i64) -> StoreResult<()> {
        tasks::delete(self, id).await
    }

    async fn run_task_now(
        &self,
        id: i64,
        only_step: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        actions::run_now(self, id, only_step, now).await
    }

    async fn make_scheduled_due(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        actions::make_scheduled_due(self, now).await
    }

    async fn retry_task(&self, id: i64, now: DateTime<Utc>) -> StoreResult<Task> {
        actions::retry(self, id, now).await
    }

    async fn request_cancel(&self, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        actions::request_cancel(self, id, now).await
    }

    async fn cancel_requested(&self, run_id: i64) -> StoreResult<bool> {
        runs::cancel_requested(self, run_id).await
    }

    async fn delete_finished_tasks(
        &self,
        finished_before: DateTime<Utc>,
        status: Option<TaskStatus>,
    ) -> StoreResult<u64> {
        tasks::delete_finished(self, finished_before, status).await
    }

    async fn count_by_status(&self) -> StoreResult<StatusCounts> {
        counts::count_by_status(self).await
    }

    async fn claim_due(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedRun>> {
        let claim = ClaimDue {
            node: node.to_string(),
            now,
            lease_until,
            limit,
        };
        Ok(turn::write_then_claim(self, &[], Some(&claim)).await?.1)
    }

    fn run_writer(self: Arc<Self>, claimant: Claimant) -> Arc<dyn RunWriter> {
        group_commit::SqliteRunWriter::start(self, claimant)
    }

    async fn heartbeat(
        &self,
        node: &str,
        run_ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        runs::heartbeat(self, node, run_ids, lease_until).await
    }

    async fn expired_runs(
        &self,
        now: DateTime<Utc>,
        node: Option<&str>,
    ) -> StoreResult<Vec<(Task, i64)>> {
        runs::expired_runs(self, now, node).await
    }

    async fn apply_writes(&self, ops: &[WriteOp]) -> StoreResult<Vec<WriteAnswer>> {
        runs::apply_writes(self, ops).await
    }

    async fn finish_run(&self, task_id: i64, run_id: i64, end: &RunEnd) -> StoreResult<bool> {
        runs::finish_run(self, task_id, run_id, end).await
    }

    async fn list_runs(&self, task_id: i64, limit: i64) -> StoreResult<Vec<Run>> {
        runs::list_runs(self, task_id, limit).await
    }

    async fn recent_run_durations(&self, task_id: i64, limit: i64) -> StoreResult<Vec<f64>> {
        runs::recent_run_durations(self, task_id, limit).await
    }

    async fn claim_hooks(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueHook>> {
        hooks::claim(self, node, now, lease_until, limit).await
    }

    async fn record_hook_attempt(
        &self,
        delivery_id: i64,
        attempt: &HookAttempt,
        next: HookNext,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        hooks::record_attempt(self, delivery_id, attempt, next, now).await
    }

    async fn list_hook_deliveries(
        &self,
        task_id: i64,
        run_ids: &[i64],
    ) -> StoreResult<Vec<HookDelivery>> {
        hooks::list(self, task_id, run_ids).await
    }

    async fn retry_hook_delivery(
        &self,
        task_id: i64,
        delivery_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<HookDelivery> {
        hooks::retry(self, task_id, delivery_id, now).await
    }

    async fn beat_node(&self, node: &Node) -> StoreResult<()> {
        nodes::beat_node(self, node).await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<Node>> {
        nodes::list_nodes(self).await
    }

    /// One node has the file to itself (see the lock): nobody to tell.
    async fn notify_nodes(&self, _payloads: &[String]) -> StoreResult<()> {
        Ok(())
    }

    fn node_messages(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        None
    }

    async fn save_checkpoint(
        &self,
        task_id: i64,
        step_id: i64,
        data: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        blobs::save_checkpoint(self, task_id, step_id, data, now).await
    }

    async fn load_checkpoint(&self, task_id: i64, step_id: i64) -> StoreResult<Option<Vec<u8>>> {
        blobs::load_checkpoint(self, task_id, step_id).await
    }

    async fn write_artifact(
        &self,
        task_id: i64,
        run_id: i64,
        step_id: i64,
        name: &str,
        data: &[u8],
        append: bool,
        max_bytes: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let target = artifacts::ArtifactTarget {
            task_id,
            run_id,
            step_id,
            name,
        };
        artifacts::write_artifact(self, target, data, append, max_bytes, now).await
    }

    async fn list_artifacts(&self, task_id: i64) -> StoreResult<Vec<Artifact>> {
        artifacts::list_artifacts(self, task_id).await
    }

    async fn artifact_chunks(
        &self,
        task_id: i64,
        name: &str,
        run_id: Option<i64>,
    ) -> StoreResult<Option<ArtifactChunks>> {
        artifacts::artifact_chunks(self, task_id, name, run_id).await
    }

    async fn artifact_chunk(&self, chunk_id: i64) -> StoreResult<Option<Vec<u8>>> {
        artifacts::artifact_chunk(self, chunk_id).await
    }

    async fn append_events(&self, events: &[EventRecord]) -> StoreResult<()> {
        records::append_events(self, events).await
    }

    async fn list_events(
        &self,
        task_id: i64,
        logs_only: bool,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        records::list_events(self, task_id, logs_only, limit).await
    }

    async fn list_logs(&self, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        records::list_logs(self, query).await
    }

    async fn put_module(
        &self,
        path: &str,
        hash: &str,
        bytes: &[u8],
        language: Option<&str>,
        metadata: Option<&ModuleMetadata>,
        now: DateTime<Utc>,
    ) -> StoreResult<(Module, bool)> {
        blobs::put_module(self, path, hash, bytes, language, metadata, now).await
    }

    async fn get_module(&self, path: &str) -> StoreResult<Option<Module>> {
        blobs::get_module(self, path).await
    }

    async fn list_modules(&self) -> StoreResult<Vec<Module>> {
        blobs::list_modules(self).await
    }

    async fn set_module_active(
        &self,
        path: &str,
        active: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Module> {
        blobs::set_module_active(self, path, active, now).await
    }

    async fn set_module_limits(
        &self,
        path: &str,
        limits: ModuleLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<Module> {
        limits::set_module_limits(self, path, limits, now).await
    }

    async fn module_usage(&self, now: DateTime<Utc>) -> StoreResult<Vec<ModuleUsage>> {
        limits::module_usage(self, now).await
    }

    async fn task_starts_since(&self, task_id: i64, since: DateTime<Utc>) -> StoreResult<i64> {
        limits::task_starts_since(self, task_id, since).await
    }

    async fn delete_module(&self, path: &str) -> StoreResult<()> {
        blobs::delete_module(self, path).await
    }

    async fn module_bytes(&self, hash: &str) -> StoreResult<Option<Vec<u8>>> {
        blobs::module_bytes(self, hash).await
    }

    async fn missing_module_tasks(&self, limit: i64) -> StoreResult<Vec<MissingModuleTask>> {
        blobs::missing_module_tasks(self, limit).await
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Token> {
        records::create_token(self, name, role, token_hash, now).await
    }

    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<Token>> {
        records::find_token(self, token_hash, Utc::now()).await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<Token>> {
        records::list_tokens(self).await
    }

    async fn revoke_token(&self, id: i64) -> StoreResult<()> {
        records::revoke_token(self, id, Utc::now()).await
    }

    async fn count_tokens(&self) -> StoreResult<i64> {
        records::count_tokens(self).await
    }

    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        records::prune(self, before).await
    }

    async fn performance(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<PerformanceStats> {
        stats::performance(self, since, now).await
    }

    async fn alert_facts(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<AlertFacts> {
        stats::alert_facts(self, since, now).await
    }
}
