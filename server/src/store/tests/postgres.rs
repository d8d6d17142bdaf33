//! The conformance suite against PostgreSQL, plus what only a store shared
//! by several nodes has: concurrent claims from separate pools, messages
//! between nodes, migrations raced by nodes starting together.
//!
//! Each test gets a schema of its own (`stepwise_t_<secs>_<pid>_<n>`) on the
//! server at `STEPWISE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`): the store connects with
//! `search_path` set to it, so its migrations and tables go there. The
//! schema is dropped when the test ends, and schemas older than an hour
//! (left by killed runs) at the first test of a process. Without a server
//! the tests print `skipped: …` and pass — except with `CI=true`, where
//! they must run and fail instead.

use super::*;
use crate::store::postgres::redacted;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Connections per test store (the server allows 100 in all, and tests run
/// in parallel).
const TEST_POOL: u32 = 4;
/// Test schemas older than this are left over from killed runs.
const STALE_SECS: u64 = 3600;

static NEXT_SCHEMA: AtomicU64 = AtomicU64::new(0);
static SWEPT: AtomicBool = AtomicBool::new(false);

fn server_url() -> String {
    std::env::var("STEPWISE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// No server: skip (print why), or fail in CI, where the tests must run.
fn unreachable(reason: String) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("PostgreSQL is required in CI (CI=true): {reason}");
    }
    println!("skipped: {reason}");
}

/// A test's own schema; dropped (with everything in it) when this drops.
pub(crate) struct Schema {
    url: String,
    name: String,
}

impl Schema {
    /// Options that put a store's tables in this schema.
    fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url)
            .expect("a PostgreSQL URL")
            .options([("search_path", self.name.as_str())])
            // So that the drop finds (and ends) the test's connections.
            .application_name(&self.name)
    }

    /// A store on this schema (several may share it, as nodes do).
    async fn open(&self) -> PostgresStore {
        PostgresStore::connect(self.options(), TEST_POOL, &redacted(&self.url))
            .await
            .expect("open the PostgreSQL store")
    }
}

impl Drop for Schema {
    /// On a thread of its own with its own runtime: a drop cannot await, and
    /// the test's runtime may be the current-thread kind.
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                // The test's pools close their connections in tasks of a
                // runtime that is ending (or blocked on this very drop): end
                // them here, or the drop would wait for their locks.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&mut conn)
                .await?;
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test schema {}: {error}", self.name);
        }
    }
}

/// A fresh, empty schema on the test server, or `None` (skipped) without one.
async fn fresh_schema() -> Option<Schema> {
    let url = server_url();
    let mut conn = match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(error) => {
            unreachable(format!(
                "no PostgreSQL at {} ({error}); set STEPWISE_TEST_POSTGRES to a server's URL",
                redacted(&url)
            ));
            return None;
        }
    };
    let secs = chrono::Utc::now().timestamp().max(0) as u64;
    if !SWEPT.swap(true, Ordering::SeqCst) {
        sweep(&mut conn, secs).await;
    }
    let name = format!(
        "stepwise_t_{secs}_{}_{}",
        std::process::id(),
        NEXT_SCHEMA.fetch_add(1, Ordering::SeqCst)
    );
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test schema");
    let _ = conn.close().await;
    Some(Schema { url, name })
}

/// Drop test schemas older than [`STALE_SECS`] (their name says when they
/// were made). Best effort: another process may be dropping them too.
async fn sweep(conn: &mut PgConnection, now_secs: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'stepwise\\_t\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let made: Option<u64> = name
            .strip_prefix("stepwise_t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if made.is_some_and(|made| made + STALE_SECS < now_secs) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// A fresh, empty store in a schema of its own, or `None` (skipped).
async fn postgres_store() -> Option<(Schema, PostgresStore)> {
    let schema = fresh_schema().await?;
    let store = schema.open().await;
    Some((schema, store))
}

conformance!(postgres_store);

#[async_trait::async_trait]
impl NoOrphans for Schema {
    /// The two links no foreign key checks (migration 0014); every other is
    /// a foreign key PostgreSQL checks itself.
    async fn assert_no_orphans(&self) {
        let mut conn = PgConnection::connect_with(&self.options())
            .await
            .expect("connect");
        let (runs, step_runs): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM runs AS r \
                     WHERE NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.id = r.task_id)), \
                    (SELECT count(*) FROM step_runs AS s \
                     WHERE NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.id = s.run_id))",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count orphans");
        assert_eq!(
            (runs, step_runs),
            (0, 0),
            "runs without their task, step runs without their run"
        );
        let _ = conn.close().await;
    }
}

/// One node deletes tasks while another claims and completes them, until
/// all are gone: no run is left without its task. No foreign key holds that
/// (migration 0014); a claim inserts a run only for a task it holds locked,
/// and a delete takes the task's runs in a statement after it took the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_deleted_while_another_node_runs_them_leave_no_run_behind() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let (claimer, deleter) = (schema.open().await, schema.open().await);
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(
            create(&claimer, new_task(&format!("raced {n}")), 0)
                .await
                .id,
        );
    }
    let claims = async {
        loop {
            let batch = claim(&claimer, 1, 8).await;
            if batch.is_empty() {
                return;
            }
            for run in &batch {
                complete(&claimer, run, 2).await;
            }
        }
    };
    // Passes over the tasks left: one found running is deleted on a later
    // pass, with the run it has by then.
    let deletes = async {
        let (mut left, mut deleted_after_a_run) = (ids.clone(), 0);
        while !left.is_empty() {
            let mut running = Vec::new();
            for id in left {
                match deleter.delete_task(id).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => running.push(id),
                    Err(error) => panic!("delete {id}: {error}"),
                }
            }
            if running.is_empty() {
                return deleted_after_a_run;
            }
            deleted_after_a_run += running.len();
            left = running;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        deleted_after_a_run
    };
    let ((), deleted_after_a_run) = tokio::join!(claims, deletes);
    assert!(
        deleted_after_a_run > 0,
        "some tasks were deleted after they ran"
    );
    schema.assert_no_orphans().await;
}

/// Four nodes (four stores, four pools) claim 400 due tasks at once: every
/// task is claimed exactly once, with one run each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_from_four_nodes_never_overlap() {
    const TASKS: usize = 400;
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(std::sync::Arc::new(schema.open().await));
    }
    let tasks = (0..TASKS)
        .map(|i| new_task(&format!("t{i}")))
        .collect::<Vec<_>>();
    for created in nodes[0].create_tasks(tasks, t(0)).await.expect("create") {
        created.expect("created");
    }
    let claimers = nodes.iter().enumerate().map(|(n, store)| {
        let store = store.clone();
        tokio::spawn(async move {
            let node = format!("node-{n}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(&node, t(1), t(31), 7).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| (c.task.id, c.run_id)));
            }
        })
    });
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for claimer in claimers {
        let mine = claimer.await.expect("claimer");
        per_node.push(mine.len());
        all.extend(mine);
    }
    let tasks: HashSet<i64> = all.iter().map(|(task, _)| *task).collect();
    let runs: HashSet<i64> = all.iter().map(|(_, run)| *run).collect();
    assert_eq!(
        all.len(),
        TASKS,
        "every task claimed once (per node: {per_node:?})"
    );
    assert_eq!(tasks.len(), TASKS);
    assert_eq!(runs.len(), TASKS);
    let counts = nodes[0].count_by_status().await.expect("counts");
    let running = counts
        .iter()
        .find(|(status, _)| *status == TaskStatus::Running)
        .map(|(_, n)| *n);
    assert_eq!(running, Some(TASKS as i64));
}

/// A message one node sends reaches the others (and itself); a store on
/// another schema of the same database hears nothing.
#[tokio::test]
async fn node_messages_reach_every_node_on_the_database() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let Some(elsewhere) = fresh_schema().await else {
        return;
    };
    let sender = schema.open().await;
    let receiver = schema.open().await;
    let stranger = elsewhere.open().await;
    let mut theirs = receiver
        .node_messages()
        .expect("PostgreSQL has node messages");
    let mut own = sender
        .node_messages()
        .expect("PostgreSQL has node messages");
    let mut strangers = stranger
        .node_messages()
        .expect("PostgreSQL has node messages");
    let sent = ["cancel 42".to_string(), "cancel 43".to_string()];
    sender.notify_nodes(&sent).await.expect("notify");
    for receiver in [&mut theirs, &mut own] {
        for expected in &sent {
            let message = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
                .await
                .expect("the message arrives")
                .expect("a message");
            assert_eq!(&*message, expected.as_str(), "in the order sent");
        }
    }
    let heard = tokio::time::timeout(Duration::from_millis(300), strangers.recv()).await;
    assert!(heard.is_err(), "another schema's store heard {heard:?}");
}

/// Nodes starting together on an empty database: both migrate (one waits
/// for the other's advisory lock), neither fails, each migration applies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_raced_by_two_nodes_apply_once() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let (first, second) = tokio::join!(
        PostgresStore::connect(schema.options(), TEST_POOL, "the test server"),
        PostgresStore::connect(schema.options(), TEST_POOL, "the test server"),
    );
    let (first, second) = (first.expect("first node"), second.expect("second node"));
    let id = create(&first, new_task("shared"), 0).await.id;
    assert_eq!(get(&second, id).await.name, "shared");
    let mut conn = PgConnection::connect_with(&schema.options())
        .await
        .expect("connect");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("count migrations");
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .expect("the migrations directory")
    .count();
    assert_eq!(applied as usize, files);
}

/// A claim commits without waiting for the WAL flush (see `postgres/claim.rs`),
/// for its own transaction only: every connection it ran on is back to
/// `synchronous_commit = on` for the writes that must wait.
#[tokio::test]
async fn claims_relax_durability_for_themselves_only() {
    let Some((_schema, store)) = postgres_store().await else {
        return;
    };
    for i in 0..20 {
        create(&store, new_task(&format!("t{i}")), 0).await;
    }
    for now in 1..=4 {
        assert_eq!(claim(&store, now, 5).await.len(), 5);
    }
    let settings = store.synchronous_commit_of_idle_connections().await;
    assert!(!settings.is_empty());
    assert!(settings.iter().all(|s| s == "on"), "{settings:?}");
}

/// A deferred create commits without waiting for the WAL flush (for its own
/// transaction only), and is known to be on disk once a synchronous commit
/// that wrote follows it or `sync_deferred` writes one; a run end that
/// applies nothing writes nothing, and covers nothing.
#[tokio::test]
async fn deferred_creates_are_covered_by_the_next_synchronous_commit_or_a_sync() {
    let Some((_schema, store)) = postgres_store().await else {
        return;
    };
    deferred_creates_are_covered(&store, &|| store.deferred_uncovered()).await;
    let settings = store.synchronous_commit_of_idle_connections().await;
    assert!(settings.iter().all(|s| s == "on"), "{settings:?}");

    let deferred = store
        .create_tasks_deferred(vec![new_task("last")], t(6))
        .await
        .expect("create");
    let task_id = deferred[0].as_ref().expect("created").0.id;
    store
        .apply_writes(&[WriteOp::FinishRun {
            task_id,
            run_id: 1_000_000,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, 7),
            claimed_version: None,
        }])
        .await
        .expect("end no run");
    assert!(store.deferred_uncovered(), "a commit that wrote nothing");
}

/// A create that claims its task (`postgres/create_and_claim.rs`) commits
/// as a deferred create does: without waiting for the WAL flush, for its
/// own transaction only, and covered by the run's end. It runs on the small
/// creates' connection, planned generically once.
#[tokio::test]
async fn a_create_that_claims_is_deferred_until_its_run_ends() {
    let Some((_schema, store)) = postgres_store().await else {
        return;
    };
    store
        .put_module("m/a", "h-a", b"a", None, None, t(0))
        .await
        .expect("module");
    for now in 1..=7 {
        let new = with_steps(new_task(&format!("t{now}")), &["m/a"]);
        let (_, run) = store
            .create_and_claim(new, NODE, t(now), t(now + 30))
            .await
            .expect("create and claim");
        let run = run.expect("claimed on an idle store");
        assert!(store.deferred_uncovered(), "the create is not synced yet");
        let op = WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, now),
            claimed_version: None,
        };
        assert_eq!(store.apply_writes(&[op]).await.expect("end"), [true]);
        assert!(!store.deferred_uncovered(), "the run's end covers it");
    }
    let settings = store.synchronous_commit_of_idle_connections().await;
    assert!(settings.iter().all(|s| s == "on"), "{settings:?}");
    let (generic, custom) = store.hot_plans().await[2];
    assert_eq!(custom, 0, "no custom plan");
    assert!(generic >= 7, "each ran a generic plan ({generic})");
}

/// The claim, the run writer's batches and creates of a few tasks run on
/// connections of their own that plan each statement once, generically (see
/// `postgres/hot_connections.rs`); larger batches of creates still work, on
/// the shared pool.
#[tokio::test]
async fn hot_statements_are_planned_once() {
    let Some((_schema, store)) = postgres_store().await else {
        return;
    };
    for i in 0..7 {
        let created = store
            .create_tasks(vec![with_steps(new_task(&format!("t{i}")), &["m/a"])], t(0))
            .await
            .expect("create");
        assert!(created[0].is_ok());
    }
    for now in 1..=7 {
        let run = claim_one(&store, now).await;
        let op = WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, now),
            claimed_version: None,
        };
        assert_eq!(store.apply_writes(&[op]).await.expect("end"), [true]);
    }
    let [claims, writes, creates] = store.hot_plans().await;
    for (what, (generic, custom)) in [("claim", claims), ("run end", writes), ("create", creates)] {
        assert_eq!(custom, 0, "no custom plan of a {what}");
        assert!(generic >= 7, "each {what} ran a generic plan ({generic})");
    }
    let batch: Vec<NewTask> = (0..20).map(|i| new_task(&format!("b{i}"))).collect();
    let created = store.create_tasks(batch, t(8)).await.expect("create");
    assert_eq!(created.iter().filter(|c| c.is_ok()).count(), 20);
    assert_eq!(
        store.hot_plans().await[2],
        creates,
        "the batch went elsewhere"
    );
}

/// A hot connection's plans are made again every few seconds: a plan made
/// while the tables were empty reads a whole table, and where nothing
/// analyzes them (autovacuum off) it stayed, and a run end read every step
/// run ever recorded (`postgres/hot_connections.rs`).
///
/// PostgreSQL also throws plans away itself when other sessions' DDL floods
/// its invalidation queue (the other tests make schemas all the while): an
/// attempt in which that happened shows nothing, and is made again.
#[tokio::test]
async fn hot_plans_are_made_again_for_grown_tables() {
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        let Some((schema, store)) = postgres_store().await else {
            return;
        };
        if plans_are_made_again(&schema, &store).await {
            return;
        }
    }
    panic!("in {ATTEMPTS} attempts, something else threw the run end's plan away each time");
}

/// One attempt of the test above: false if the first plan was thrown away
/// before it was due.
async fn plans_are_made_again(schema: &Schema, store: &PostgresStore) -> bool {
    const RUN_END: &str = "WITH steps_done AS";
    store.replan_hot_connections(false);
    let mut conn = PgConnection::connect_with(&schema.options())
        .await
        .expect("connect");
    sqlx::query("ALTER TABLE step_runs SET (autovacuum_enabled = false)")
        .execute(&mut conn)
        .await
        .expect("no ANALYZE of step runs during the test");
    let end_one = |now: i64| async move {
        let run = claim_one(store, now).await;
        let op = WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, now),
            claimed_version: None,
        };
        assert_eq!(store.apply_writes(&[op]).await.expect("end"), [true]);
        run.run_id
    };
    create(store, with_steps(new_task("first"), &["m/a"]), 0).await;
    let run_id = end_one(1).await;
    let empty = store.hot_write_plan(RUN_END).await;
    assert!(
        empty.contains("Seq Scan on step_runs"),
        "on empty tables the run end reads step runs whole (else this test shows nothing):\n{empty}"
    );

    sqlx::query(
        "INSERT INTO step_runs (run_id, step_id, sort_order, controller, status) \
         SELECT $1, g, 0, 'm/a', 'completed' FROM generate_series(1000, 20999) AS g",
    )
    .bind(run_id)
    .execute(&mut conn)
    .await
    .expect("20,000 step runs of history");
    if store.hot_write_plan(RUN_END).await != empty {
        return false;
    }

    store.replan_hot_connections(true);
    let grown = store.hot_write_plan(RUN_END).await;
    assert!(
        !grown.contains("Seq Scan on step_runs"),
        "made again for 20,000 step runs, it reads them by index:\n{grown}"
    );
    create(store, with_steps(new_task("second"), &["m/a"]), 2).await;
    end_one(3).await;
    true
}

/// Once a module is deactivated, a claim still reads only the due tasks' own
/// steps. With many tasks scheduled, it used to be planned as a hash of
/// every enabled step of every task, built by each claim, whose time then
/// grew with the whole queue (see `uses_limited_sql` in `store/limits.rs`).
#[tokio::test]
async fn a_claim_with_a_module_held_reads_only_the_due_tasks_steps() {
    let Some((schema, store)) = postgres_store().await else {
        return;
    };
    put_inactive_module(&store).await;
    for i in 0..3 {
        create(
            &store,
            with_steps(new_task(&format!("due {i}")), &["m/a"]),
            0,
        )
        .await;
    }
    let mut conn = PgConnection::connect_with(&schema.options())
        .await
        .expect("connect");
    for queue in [
        "INSERT INTO tasks (name, status, priority, run_interval, max_execution_time, \
                max_attempts, next_run_at, created_at, updated_at) \
         SELECT 'later', 'scheduled', t.priority, 0, 10, 1, $1 + g, 0, 0 \
         FROM generate_series(1, 20000) AS g, (SELECT priority FROM tasks LIMIT 1) AS t",
        "INSERT INTO steps (task_id, sort_order, controller, settings, max_execution_time, \
                interrupt_on_step_fault, status) \
         SELECT id, 0, 'm/a', '{}', 10, FALSE, 'scheduled' FROM tasks WHERE name = 'later'",
        "ANALYZE tasks, steps, modules",
    ] {
        let query = sqlx::query(queue);
        let query = if queue.contains("$1") {
            query.bind(t(3600).timestamp_millis())
        } else {
            query
        };
        query
            .execute(&mut conn)
            .await
            .expect("20,000 tasks scheduled for later");
    }
    store.replan_hot_connections(true);
    assert_eq!(claim(&store, 1, 10).await.len(), 3, "the due tasks run");
    let plan = store.hot_claim_plan("WITH held AS").await;
    assert!(
        !plan.contains("Seq Scan on steps"),
        "the claim reads the due tasks' steps by index:\n{plan}"
    );
}

/// The CHECK constraints refuse a status no Rust enum has, as SQLite's do.
#[tokio::test]
async fn check_constraints_refuse_unknown_states() {
    let Some((schema, store)) = postgres_store().await else {
        return;
    };
    let id = create(&store, new_task("checked"), 0).await.id;
    let mut conn = PgConnection::connect_with(&schema.options())
        .await
        .expect("connect");
    let refused = sqlx::query("UPDATE tasks SET status = 'lost' WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await;
    assert!(refused.is_err(), "status 'lost' was accepted");
}

/// An unreachable server is reported with what to do, and no password.
#[tokio::test]
async fn an_unreachable_server_says_what_to_do() {
    let error = PostgresStore::open("postgres://me:hunter2@127.0.0.1:1/nowhere")
        .await
        .expect_err("nothing listens on port 1");
    let message = format!("{error:#}");
    assert!(message.contains("is the server running"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// Two nodes registering one new code at once: neither fails, and there is
/// one task of that code (the later create replaced the earlier).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_creating_one_code_make_one_task() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let (first, second) = (schema.open().await, schema.open().await);
    for round in 0..10 {
        let code = format!("nightly-{round}");
        let coded = |name: &str| NewTask {
            code: Some(code.clone()),
            ..new_task(name)
        };
        let (a, b) = tokio::join!(
            first.create_task(coded("from first"), t(round)),
            second.create_task(coded("from second"), t(round)),
        );
        let (a, b) = (a.expect("first create"), b.expect("second create"));
        assert_eq!(a.0.id, b.0.id, "one task for code {code}");
        assert!(a.1 != b.1, "exactly one of them created it");
    }
    let listed = first
        .list_tasks(&TaskFilter {
            limit: 100,
            ..TaskFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 10);
}

/// Counts come from the delta rows every task statement appends (migration
/// 0011): they agree with the tasks table through creates, status changes
/// and deletes, and after compactions, two of which race.
#[tokio::test]
async fn task_counts_follow_every_change_and_survive_compaction() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let store = schema.open().await;
    let other_node = schema.open().await;
    let mut ids = Vec::new();
    for n in 0..(crate::store::postgres::COMPACT_ABOVE + 40) {
        ids.push(
            create(&store, new_task(&format!("counted {n}")), 0)
                .await
                .id,
        );
    }
    let mut conn = PgConnection::connect_with(&schema.options())
        .await
        .expect("connect");
    let deltas = || "SELECT count(*) FROM task_count_deltas";
    let before: i64 = sqlx::query_scalar(deltas())
        .fetch_one(&mut conn)
        .await
        .expect("count delta rows");
    assert!(
        before > crate::store::postgres::COMPACT_ABOVE,
        "one delta row per create: {before}"
    );
    sqlx::query("UPDATE tasks SET status = 'disabled' WHERE id = ANY($1)")
        .bind(&ids[..10])
        .execute(&mut conn)
        .await
        .expect("disable ten");
    sqlx::query("DELETE FROM tasks WHERE id = ANY($1)")
        .bind(&ids[10..15])
        .execute(&mut conn)
        .await
        .expect("delete five");
    let (one, two) = tokio::join!(store.count_by_status(), other_node.count_by_status());
    let truth: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status")
            .fetch_all(&mut conn)
            .await
            .expect("count the tasks");
    for counts in [
        one.expect("counts"),
        two.expect("counts"),
        store.count_by_status().await.expect("counts"),
    ] {
        for (status, n) in &counts {
            let real = truth
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            assert_eq!(*n, real, "{status}: counted {n}, the table has {real}");
        }
    }
    let after: i64 = sqlx::query_scalar(deltas())
        .fetch_one(&mut conn)
        .await
        .expect("count delta rows");
    assert!(
        after <= TaskStatus::ALL.len() as i64,
        "compacted to a row per status: {after}"
    );
}
