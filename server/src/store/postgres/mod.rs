//! The PostgreSQL store: many nodes, one database.
//!
//! Every node opens its own pool on the same database, so every method is
//! safe against the other nodes' transactions: claims lock the due rows they
//! take (`FOR UPDATE SKIP LOCKED`, two nodes never take the same task), and
//! every write that depends on a row's state reads it under a row lock or
//! states the condition in the `UPDATE` itself (PostgreSQL re-checks it on
//! the latest row version after waiting for a concurrent writer).
//!
//! The semantics are SQLite's (`store/sqlite/`), statement for statement
//! where the two dialects allow; times are BIGINT milliseconds, as there.
//! Nodes talk to each other over `LISTEN`/`NOTIFY` (see [`notify`]).

mod actions;
mod artifacts;
mod blobs;
mod claim;
mod claim_at_once;
mod counts;
mod create_and_claim;
#[cfg(test)]
pub(crate) use counts::COMPACT_ABOVE;
mod create_batch;
mod deferred;
mod hooks;
mod hot_connections;
mod limits;
mod nodes;
mod notify;
mod records;
mod rows;
mod runs;
mod stats;
mod steps;
mod tasks;
mod writes;

use crate::store::*;
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Shared connections per node: API requests, live views, the heartbeat
/// and the engine's other work share them. The claim, the run writer and
/// small creates have one each of their own besides (see
/// [`hot_connections`]), and the `LISTEN` one more.
pub const POOL_SIZE: u32 = 14;

/// A pooled connection used this recently is handed out as it is; one idle
/// longer is pinged first, and replaced if the server dropped it (a restart,
/// an idle timeout). Pinging every one (sqlx's default) cost a round trip
/// before every statement: on a busy node, most of them.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// How long opening waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// See the module docs.
pub struct PostgresStore {
    pool: PgPool,
    /// Connections of their own for the claim, the run writer and small
    /// creates (see [`hot_connections`]).
    hot: hot_connections::HotConnections,
    /// Where this store's `LISTEN` connection hands on what other nodes send.
    messages: broadcast::Sender<Arc<str>>,
    /// The channel the nodes sharing this store talk on.
    channel: String,
    /// The task forwarding notifications; stopped when the store is dropped.
    listener: tokio::task::JoinHandle<()>,
    /// Creates committed without waiting for the WAL flush (see [`deferred`]).
    deferred: deferred::DeferredCreates,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://user:password@host/db`)
    /// with a pool of [`POOL_SIZE`] connections, apply pending migrations
    /// (nodes starting together take turns: sqlx's migrator holds an
    /// advisory lock), and start listening to the other nodes.
    pub async fn open(url: &str) -> anyhow::Result<PostgresStore> {
        let options = PgConnectOptions::from_str(url).with_context(|| {
            format!(
                "`{}` is not a PostgreSQL URL; write it as postgres://user:password@host:5432/database",
                redacted(url)
            )
        })?;
        Self::connect(options, POOL_SIZE, &redacted(url)).await
    }

    /// [`Self::open`] with options already parsed and a pool size of
    /// `connections`; `shown` names the server in errors (no password).
    pub(crate) async fn connect(
        options: PgConnectOptions,
        connections: u32,
        shown: &str,
    ) -> anyhow::Result<PostgresStore> {
        let unreachable = || {
            format!(
                "could not connect to PostgreSQL at {shown} — is the server running, \
                 and does the database exist (createdb it first)?"
            )
        };
        // One connection first: the pool would retry a refused connection
        // until its acquire timeout, where a user wants the reason at once.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| anyhow::anyhow!("no answer in {} s", CONNECT_TIMEOUT.as_secs()))
            .with_context(unreachable)?
            .with_context(unreachable)?;
        probe.close().await.with_context(unreachable)?;
        let hot = hot_connections::HotConnections::lazy(&options);
        let pool = pool_options(connections)
            .connect_with(options)
            .await
            .with_context(unreachable)?;
        MIGRATOR.run(&pool).await.with_context(|| {
            format!(
                "migrating the database at {shown} failed; check that the user may create \
                 tables in it, and that no newer Stepwise migrated it first"
            )
        })?;
        let channel = notify::channel(&pool).await?;
        let (messages, _) = broadcast::channel(notify::CAPACITY);
        let listener = notify::listen(&pool, &channel, messages.clone())
            .await
            .with_context(|| format!("listening for other nodes on PostgreSQL at {shown}"))?;
        Ok(PostgresStore {
            pool,
            hot,
            messages,
            channel,
            listener,
            deferred: deferred::DeferredCreates::default(),
        })
    }
}

/// A pool of at most `connections`, which pings only connections idle for
/// longer than [`TRUSTED_IDLE`].
fn pool_options(connections: u32) -> PgPoolOptions {
    unchecked_pool_options(connections)
        .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta.idle_for)))
}

/// A pool of at most `connections` that hands out connections unchecked
/// (its `before_acquire` is the caller's).
fn unchecked_pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
}

/// Ping a connection idle for [`TRUSTED_IDLE`] or longer before it is
/// handed out (an error makes the pool replace it).
async fn ping_if_idle(conn: &mut PgConnection, idle_for: Duration) -> sqlx::Result<bool> {
    if idle_for >= TRUSTED_IDLE {
        conn.ping().await?;
    }
    Ok(true)
}

/// End a transaction as its work went: commit on success; on an error, roll
/// back *now*. A transaction merely dropped is rolled back only once its
/// connection is released in the background, and until then it keeps its
/// row locks: a claim right after a refused `run now` would skip the task
/// it had locked (`SKIP LOCKED`), and other writers would wait for it.
async fn settle<R>(
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    result: StoreResult<R>,
) -> StoreResult<R> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!("rolling back after `{error}` failed too: {rollback}");
            }
            Err(error)
        }
    }
}

/// Whether a transaction failed only because it collided with another one
/// (PostgreSQL chose it as a deadlock's victim, or could not serialize it):
/// it was rolled back whole, and running it again is safe. Nodes write the
/// same rows rarely but not never (a rescuer ending a run its slow node is
/// ending too), and in no fixed order.
fn retryable(error: &StoreError) -> bool {
    let StoreError::Internal(error) = error else {
        return false;
    };
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code())
            .is_some_and(|code| code == "40P01" || code == "40001")
    })
}

/// `url` with its password (if any) replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user_info = &authority[..at];
    let Some(colon) = user_info.find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end + 3],
        &user_info[..colon],
        &rest[at..]
    )
}

#[async_trait]
impl Store for PostgresStore {
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

    async fn sync_deferred(&self) -> StoreResult<()> {
        deferred::sync(self).await
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
        claim::claim_due(self, node, now, lease_until, limit).await
    }

    fn run_writer(self: Arc<Self>, claimant: Claimant) -> Arc<dyn RunWriter> {
        BatchedRunWriter::start(self, claimant)
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
        writes::apply_writes(self, ops).await
    }

    async fn finish_run(&self, task_id: i64, run_id: i64, end: &RunEnd) -> StoreResult<bool> {
        let op = WriteOp::FinishRun {
            task_id,
            run_id,
            end: end.clone(),
            claimed_version: None,
        };
        Ok(writes::apply_writes(self, &[op]).await?[0].applied())
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

    async fn notify_nodes(&self, payloads: &[String]) -> StoreResult<()> {
        notify::send(self, payloads).await
    }

    fn node_messages(&self) -> Option<broadcast::Receiver<Arc<str>>> {
        Some(self.messages.subscribe())
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

#[cfg(test)]
impl PostgresStore {
    /// Whether a deferred create is not yet known to be on disk.
    pub(crate) fn deferred_uncovered(&self) -> bool {
        self.deferred.uncovered()
    }

    /// How often each hot connection (claims, writes, small creates; see
    /// [`hot_connections`]) ran its statements' generic plans, and how
    /// often custom ones: `(generic, custom)`.
    pub(crate) async fn hot_plans(&self) -> [(i64, i64); 3] {
        let mut plans = [(0, 0); 3];
        for (pool, plans) in self.hot.all().into_iter().zip(&mut plans) {
            *plans = sqlx::query_as(
                "SELECT COALESCE(sum(generic_plans), 0)::bigint, \
                        COALESCE(sum(custom_plans), 0)::bigint \
                 FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared%'",
            )
            .fetch_one(pool)
            .await
            .expect("read the prepared statements");
        }
        plans
    }

    /// Make each hot connection's plans again before its next statement, as
    /// it does every few seconds (see [`hot_connections`]), or (`false`)
    /// keep them until this is called again.
    pub(crate) fn replan_hot_connections(&self, now: bool) {
        self.hot.set_plans_due(now);
    }

    /// The plan the run writer's connection would run its prepared statement
    /// that begins with `prefix` by (see [`explain_prepared`]).
    pub(crate) async fn hot_write_plan(&self, prefix: &str) -> String {
        explain_prepared(&self.hot.writes, prefix).await
    }

    /// The plan the claims' connection would run its prepared statement that
    /// begins with `prefix` by (see [`explain_prepared`]).
    pub(crate) async fn hot_claim_plan(&self, prefix: &str) -> String {
        explain_prepared(&self.hot.claims, prefix).await
    }

    /// `synchronous_commit` as each idle connection of the store's pools has
    /// it now (all of them held at once, so none is read twice).
    pub(crate) async fn synchronous_commit_of_idle_connections(&self) -> Vec<String> {
        let mut held = Vec::new();
        let mut settings = Vec::new();
        for pool in std::iter::once(&self.pool).chain(self.hot.all()) {
            for _ in 0..pool.num_idle() {
                let mut conn = pool.acquire().await.expect("connection");
                settings.push(
                    sqlx::query_scalar("SHOW synchronous_commit")
                        .fetch_one(&mut *conn)
                        .await
                        .expect("show synchronous_commit"),
                );
                held.push(conn);
            }
        }
        settings
    }
}

/// The plan a hot connection of `pool` would run its prepared statement
/// that begins with `prefix` by: `EXPLAIN EXECUTE` with every parameter NULL
/// (the plan is generic, so the values do not matter).
#[cfg(test)]
async fn explain_prepared(pool: &PgPool, prefix: &str) -> String {
    let mut conn = pool.acquire().await.expect("connection");
    let (name, parameters): (String, i32) = sqlx::query_as(
        "SELECT name, cardinality(parameter_types) FROM pg_prepared_statements \
         WHERE starts_with(statement, $1)",
    )
    .bind(prefix)
    .fetch_one(&mut *conn)
    .await
    .expect("the statement is prepared on the hot connection");
    let nulls = vec!["NULL"; usize::try_from(parameters).unwrap_or(0)].join(", ");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}({nulls})"))
        .fetch_all(&mut *conn)
        .await
        .expect("explain the prepared statement");
    plan.join("\n")
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redacted("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redacted("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redacted("postgres://db/x?a=b@c"), "postgres://db/x?a=b@c");
        assert_eq!(
            redacted("postgresql://u:p@ss@h/d"),
            "postgresql://u:***@h/d"
        );
    }
}
