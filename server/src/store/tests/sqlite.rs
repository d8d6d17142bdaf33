//! The conformance suite against SQLite, plus what only SQLite has: the
//! single-server file lock and the durability setting.

use super::*;
use crate::store::sqlite::{TurnClaim as ClaimDue, WriterTurn, WriterTurns};
use tempfile::TempDir;

/// A fresh store in its own temp dir (deleted when the guard drops).
async fn sqlite_store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("stepwise.db"), Durability::Full)
        .await
        .expect("open store");
    (dir, store)
}

conformance!(sqlite_store);

#[async_trait::async_trait]
impl NoOrphans for TempDir {
    /// `PRAGMA foreign_key_check` on the store's file: SQLite's engine
    /// writes with foreign keys off (see `sqlite::direct`).
    async fn assert_no_orphans(&self) {
        use sqlx::Connection;
        let url = format!("sqlite://{}", self.path().join("stepwise.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("open the store's file");
        let orphans: Vec<(String, String)> =
            sqlx::query_as("SELECT \"table\", parent FROM pragma_foreign_key_check")
                .fetch_all(&mut conn)
                .await
                .expect("foreign_key_check");
        assert!(orphans.is_empty(), "rows without their parent: {orphans:?}");
    }
}

#[tokio::test]
async fn second_open_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stepwise.db");
    let first = SqliteStore::open(&path, Durability::Full)
        .await
        .expect("first open");
    let id = create(&first, new_task("kept"), 0).await.id;

    let error = SqliteStore::open(&path, Durability::Full)
        .await
        .expect_err("second open must fail");
    let message = format!("{error:#}");
    assert!(
        message.contains("another Stepwise server is already using"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("--data-dir"), "{message}");

    drop(first);
    let again = SqliteStore::open(&path, Durability::Normal)
        .await
        .expect("open after the first closed");
    assert_eq!(get(&again, id).await.name, "kept");
}

#[tokio::test]
async fn reopening_keeps_data_and_skips_applied_migrations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stepwise.db");
    let store = SqliteStore::open(&path, Durability::Normal)
        .await
        .expect("open");
    let claimed = {
        create(&store, new_task("persisted"), 0).await;
        claim_one(&store, 1).await
    };
    drop(store);
    let store = SqliteStore::open(&path, Durability::Full)
        .await
        .expect("reopen");
    let task = get(&store, claimed.task.id).await;
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.current_run_id, Some(claimed.run_id));
}

/// A claim commits with `synchronous=NORMAL` (see `sqlite::relaxed`); every
/// other write must stay FULL — also after a claim that errs or whose future
/// is dropped half-way (the connection is then closed and reopened).
#[tokio::test]
async fn claims_relax_durability_for_themselves_only() {
    let (_dir, store) = sqlite_store().await;
    for i in 0..50 {
        create(&store, new_task(&format!("t{i}")), 0).await;
    }
    assert_eq!(
        store.writer_synchronous().await,
        (2, 2),
        "FULL to begin with"
    );
    assert_eq!(claim(&store, 1, 5).await.len(), 5);
    assert_eq!(
        store.writer_synchronous().await,
        (2, 2),
        "FULL after a claim"
    );
    for micros in (0..400).step_by(10) {
        let claim = store.claim_due(NODE, t(1), t(31), 1);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(micros), claim).await;
        assert_eq!(
            store.writer_synchronous().await,
            (2, 2),
            "FULL after a claim dropped at {micros} µs"
        );
    }
}

/// A deferred create commits without an fsync, and is known to be on disk
/// once a synced commit follows it (a run's end) or `sync_deferred` syncs
/// the WAL; the hot connection is back to FULL after it.
#[tokio::test]
async fn deferred_creates_are_covered_by_the_next_synced_commit_or_a_sync() {
    let (_dir, store) = sqlite_store().await;
    deferred_creates_are_covered(&store, &|| store.deferred_uncovered()).await;
    store
        .create_tasks_deferred(vec![new_task("last")], t(6))
        .await
        .expect("create");
    assert!(store.deferred_uncovered());
    assert_eq!(store.writer_synchronous().await, (2, 2), "FULL after it");
}

/// A turn with writes and a claim hands its runs over before it syncs the
/// WAL, and answers its writes after: they are on disk then, and with them
/// every commit before (a deferred create here), at FULL as before.
#[tokio::test]
async fn a_turns_claim_goes_out_before_its_writes_are_synced() {
    let (_dir, store) = sqlite_store().await;
    create(&store, with_steps(new_task("first"), &["m/a"]), 0).await;
    let first = claim_one(&store, 1).await;
    let next = create(&store, with_steps(new_task("next"), &["m/a"]), 1).await;
    store
        .create_tasks_deferred(vec![new_task("waited")], t(2))
        .await
        .expect("create");
    assert!(store.deferred_uncovered());
    let mut turns = ScriptedTurns::default();
    turns.turns.push_back(end_then_claim(&first));
    store.write_turns(&mut turns).await.expect("writer turns");
    assert_eq!(turns.calls, ["claimed", "done"]);
    let (applied, claimed) = turns.results.remove(0).expect("the turn");
    assert_eq!(applied, [true]);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task.id, next.id);
    assert!(
        !store.deferred_uncovered(),
        "the turn's writes were answered after a sync of the WAL"
    );
    assert_eq!(store.writer_synchronous().await, (2, 2), "FULL after it");
    assert_eq!(
        get(&store, first.task.id).await.status,
        TaskStatus::Completed
    );
}

/// With `--durability normal` nothing is synced, so nothing is deferred.
#[tokio::test]
async fn with_durability_normal_no_create_is_deferred() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal)
        .await
        .expect("open");
    store
        .create_tasks_deferred(vec![new_task("waited")], t(0))
        .await
        .expect("create");
    assert!(!store.deferred_uncovered());
}

/// Claims and the executor's write batches run with foreign-key checks and
/// CHECK constraints off, on a connection of their own (see
/// `sqlite::direct`): everything else keeps both, and no row is left
/// without its parent.
#[tokio::test]
async fn hot_transactions_leave_foreign_keys_and_checks_on_and_intact() {
    let (_dir, store) = sqlite_store().await;
    for i in 0..5 {
        create(
            &store,
            with_steps(new_task(&format!("t{i}")), &["a", "b"]),
            0,
        )
        .await;
    }
    assert_eq!(
        store.writer_foreign_keys().await,
        (1, 0),
        "on to begin with"
    );
    let claimed = claim(&store, 1, 5).await;
    assert_eq!(claimed.len(), 5);
    assert_eq!(store.writer_foreign_keys().await, (1, 0), "after a claim");
    assert!(store.writer_checks_constraints().await, "after a claim");

    let mut ops = Vec::new();
    for run in &claimed {
        for planned in &run.steps {
            ops.push(WriteOp::StartStep {
                step_run_id: planned.step_run_id,
                module_hash: Some("hash".into()),
                at: t(2),
            });
            ops.push(WriteOp::FinishStep {
                step_run_id: planned.step_run_id,
                end: step_end(StepRunStatus::Completed, 3),
            });
        }
        ops.push(WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, 4),
            claimed_version: None,
        });
    }
    let applied = store.apply_writes(&ops).await.expect("apply");
    assert!(applied.iter().all(|a| a.applied()), "{applied:?}");
    assert_eq!(
        store.writer_foreign_keys().await,
        (1, 0),
        "after the writes"
    );
    assert!(store.writer_checks_constraints().await, "after the writes");
    // And they hold: a state no Rust enum has is refused.
    let error = store
        .break_status_of(claimed[1].task.id)
        .await
        .expect_err("the CHECK refuses it");
    assert!(format!("{error:#}").contains("CHECK"), "{error:#}");

    // The checks are on again: deleting a task still takes its runs with it.
    let task_id = claimed[0].task.id;
    assert!(!store.list_runs(task_id, 10).await.expect("runs").is_empty());
    store.delete_task(task_id).await.expect("delete");
    assert_eq!(store.writer_foreign_keys().await, (1, 0), "after a delete");
}

/// A create and its claim are one transaction on SQLite; when the claim
/// fails, the task is created all the same (the caller must not create it
/// again) and left for the scheduler.
#[tokio::test]
async fn a_create_whose_claim_fails_is_created_all_the_same() {
    let (_dir, store) = sqlite_store().await;
    let broken = create(&store, with_steps(new_task("broken"), &["m/b"]), 0).await;
    store.break_steps_of(broken.id).await;
    let new = with_steps(new_task("waited"), &["m/a"]);
    assert!(new.starts_at_create(t(5)));
    let (task, claimed) = store
        .create_and_claim(new, "n1", t(5), t(65))
        .await
        .expect("the create succeeds");
    assert!(
        claimed.is_none(),
        "the broken task, due first, fails the claim"
    );
    assert_eq!(get(&store, task.id).await.status, TaskStatus::Scheduled);
    let counts = store.count_by_status().await.expect("counts");
    assert!(counts.contains(&(TaskStatus::Scheduled, 2)), "{counts:?}");
}

/// A writer turn is one transaction: when its claim fails, its writes are
/// not kept either (the engine's writer then tries them apart).
#[tokio::test]
async fn a_writer_turn_whose_claim_fails_writes_nothing() {
    let (_dir, store) = sqlite_store().await;
    let running = create(&store, with_steps(new_task("running"), &["m/a"]), 0).await;
    let first = claim_one(&store, 1).await;
    assert_eq!(first.task.id, running.id);
    let broken = create(&store, with_steps(new_task("broken"), &["m/b"]), 2).await;
    store.break_steps_of(broken.id).await;
    let finish = WriteOp::FinishRun {
        task_id: first.task.id,
        run_id: first.run_id,
        end: run_end(RunStatus::Completed, TaskStatus::Completed, 5),
        claimed_version: None,
    };
    let mut turns = ScriptedTurns::default();
    turns.turns.extend([
        WriterTurn {
            ops: vec![finish.clone()],
            claim: Some(claim_due(10, 5)),
        },
        WriterTurn {
            ops: vec![finish],
            claim: None,
        },
    ]);
    store.write_turns(&mut turns).await.expect("writer turns");
    let error = turns.results[0].as_ref().expect_err("the claim fails");
    assert!(format!("{error:#}").contains("JSON"), "{error:#}");
    assert_eq!(
        turns.results[1].as_ref().expect("writes alone").0,
        [true],
        "the failed turn's end of the run was rolled back, so it applies now"
    );
    assert_eq!(get(&store, running.id).await.status, TaskStatus::Completed);
    // The broken task was not claimed, and the failed turn's end of the run
    // was counted once, by the turn that applied it.
    let counts = store.count_by_status().await.expect("counts");
    let moved: Vec<_> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
    assert_eq!(
        moved,
        [(TaskStatus::Scheduled, 1), (TaskStatus::Completed, 1)],
        "counts"
    );
}

/// An append writes its own bytes and a few pages of bookkeeping, not the
/// artifact again: the WAL after one 1 KiB append to a 4 MiB artifact shows
/// what the append cost. (Rewriting the artifact put 4 MiB in it.)
#[tokio::test]
async fn an_artifact_append_writes_what_it_adds() {
    let (dir, store) = sqlite_store().await;
    create(&store, new_task("dump"), 0).await;
    let claimed = claim_one(&store, 1).await;
    let (task, run, step) = (claimed.task.id, claimed.run_id, claimed.steps[0].step.id);
    let store = &store;
    let append = |data: Vec<u8>| async move {
        store
            .write_artifact(task, run, step, "dump.bin", &data, true, 64 << 20, t(2))
            .await
            .expect("append")
    };
    append(vec![1; 4 << 20]).await;
    store.truncate_wal().await;
    append(vec![2; 1024]).await;
    let wal = std::fs::metadata(dir.path().join("stepwise.db-wal"))
        .expect("the WAL")
        .len();
    assert!(
        wal < 128 << 10,
        "a 1 KiB append to a 4 MiB artifact wrote {wal} bytes of WAL"
    );
}

/// A database written before migrations 0003 (artifact chunks) and 0004
/// (step ids never reused) keeps everything through them: steps and their
/// checkpoints (the steps table is rebuilt), artifacts' bytes (moved into
/// chunks); and the next step id is above every id history names.
#[tokio::test]
async fn migrations_keep_data_written_before_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stepwise.db");
    let first_two = dir.path().join("migrations");
    std::fs::create_dir(&first_two).expect("migrations dir");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for name in ["0001_init.sql", "0002_drop_tasks_status_updated.sql"] {
        std::fs::copy(shipped.join(name), first_two.join(name)).expect("copy a migration");
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true);
    let mut old = sqlx::ConnectOptions::connect(&options).await.expect("open");
    sqlx::migrate::Migrator::new(first_two.as_path())
        .await
        .expect("the first two migrations")
        .run(&mut old)
        .await
        .expect("migrate to 0002");
    sqlx::raw_sql(
        "INSERT INTO tasks (id, name, status, priority, run_interval, max_execution_time, \
                max_attempts, created_at, updated_at) \
             VALUES (1, 'legacy', 'completed', 1, 0, 0, 1, 0, 0); \
         INSERT INTO steps (id, task_id, sort_order, controller, settings, max_execution_time, \
                interrupt_on_step_fault, status) \
             VALUES (1, 1, 1, 'a/x', '{}', 60, 1, 'scheduled'), (2, 1, 2, 'a/y', '{}', 60, 1, 'scheduled'); \
         INSERT INTO runs (id, task_id, attempt, status, trigger, node, started_at, finished_at) \
             VALUES (1, 1, 1, 'completed', 'schedule', 'n', 0, 1); \
         INSERT INTO step_runs (run_id, step_id, sort_order, controller, status) \
             VALUES (1, 7, 1, 'a/replaced', 'completed'); \
         INSERT INTO events (task_id, step_id, kind, message, created_at) VALUES (1, 9, 'log', 'hi', 0); \
         INSERT INTO checkpoints (task_id, step_id, data, updated_at) VALUES (1, 2, X'0102', 0); \
         INSERT INTO artifacts (task_id, run_id, step_id, name, data, size, created_at, updated_at) \
             VALUES (1, 1, 1, 'dump.sql', CAST('legacy' AS BLOB), 6, 0, 0), (1, 1, 1, 'empty', X'', 0, 0, 0);",
    )
    .execute(&mut old)
    .await
    .expect("rows in the old schema");
    sqlx::Connection::close(old).await.expect("close");

    let store = SqliteStore::open(&path, Durability::Full)
        .await
        .expect("migrate the rest");
    let task = get(&store, 1).await;
    let step_ids: Vec<i64> = task.steps.iter().map(|s| s.id).collect();
    assert_eq!(step_ids, [1, 2]);
    assert_eq!(
        store.load_checkpoint(1, 2).await.expect("load"),
        Some(vec![1, 2]),
        "the rebuild of steps did not cascade to checkpoints"
    );
    assert_eq!(
        store
            .read_artifact(1, "dump.sql", None)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"legacy"[..])
    );
    assert_eq!(
        store.read_artifact(1, "empty", None).await.expect("read"),
        Some(Vec::new())
    );
    let next = create(&store, new_task("after"), 0).await;
    assert!(
        next.steps[0].id > 9,
        "step id {} is one history already names",
        next.steps[0].id
    );
    // The counts by status start from the tasks there were.
    super::counts_agree_with_the_tasks(&store).await;
    assert_eq!(
        store.writer_foreign_keys().await,
        (1, 0),
        "foreign keys on and intact"
    );
}

/// Turns given by a test: each taken in order, each result kept (with the
/// runs its claim handed over), and the order of the writer's calls.
#[derive(Default)]
struct ScriptedTurns {
    turns: std::collections::VecDeque<WriterTurn>,
    given: Option<WriterTurn>,
    claimed: Vec<ClaimedRun>,
    results: Vec<StoreResult<(Vec<WriteAnswer>, Vec<ClaimedRun>)>>,
    calls: Vec<&'static str>,
    /// Take every turn's writes to sync later, as a writer with more work
    /// queued does (kept as they are, unsynced).
    sync_later: bool,
}

impl WriterTurns for ScriptedTurns {
    fn next_turn(&mut self) -> Option<&WriterTurn> {
        self.given = Some(self.turns.pop_front()?);
        self.given.as_ref()
    }

    fn claimed(&mut self, runs: Vec<ClaimedRun>) {
        self.calls.push("claimed");
        self.claimed = runs;
    }

    /// Synced by the writer, in its turn, unless `sync_later` is set: what
    /// the calls' order shows.
    fn sync_later(&mut self, answers: Vec<WriteAnswer>) -> Option<Vec<WriteAnswer>> {
        if !self.sync_later {
            return Some(answers);
        }
        self.calls.push("later");
        let claimed = std::mem::take(&mut self.claimed);
        self.results.push(Ok((answers, claimed)));
        None
    }

    fn turn_done(&mut self, result: StoreResult<Vec<WriteAnswer>>) {
        self.calls.push("done");
        let claimed = std::mem::take(&mut self.claimed);
        self.results.push(result.map(|answers| (answers, claimed)));
    }
}

/// A turn whose writes are left to sync later is not synced by the writer,
/// which goes on with its next turn at once: the deferred create before
/// them is still not known to be on disk after both.
#[tokio::test]
async fn a_turn_synced_later_lets_the_writer_go_on() {
    let (_dir, store) = sqlite_store().await;
    create(&store, with_steps(new_task("first"), &["m/a"]), 0).await;
    let first = claim_one(&store, 1).await;
    create(&store, with_steps(new_task("next"), &["m/a"]), 1).await;
    store
        .create_tasks_deferred(vec![new_task("waited")], t(2))
        .await
        .expect("create");
    let mut turns = ScriptedTurns {
        sync_later: true,
        ..ScriptedTurns::default()
    };
    turns.turns.extend([
        end_then_claim(&first),
        WriterTurn {
            ops: vec![WriteOp::StartStep {
                step_run_id: first.steps[0].step_run_id,
                module_hash: None,
                at: t(11),
            }],
            claim: None,
        },
    ]);
    store.write_turns(&mut turns).await.expect("writer turns");
    assert_eq!(turns.calls, ["claimed", "later", "claimed", "later"]);
    let (applied, claimed) = turns.results.remove(0).expect("the first turn");
    assert_eq!(applied, [true]);
    assert_eq!(claimed.len(), 1);
    assert!(
        store.deferred_uncovered(),
        "the writer synced a turn it had handed on"
    );
    assert_eq!(store.writer_synchronous().await, (2, 2), "FULL after them");
}

/// A turn that completes `run` at 5 and claims one task at 10.
fn end_then_claim(run: &ClaimedRun) -> WriterTurn {
    WriterTurn {
        ops: vec![WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, 5),
            claimed_version: None,
        }],
        claim: Some(claim_due(10, 1)),
    }
}

/// The claim of `limit` tasks at `now` that a writer turn carries.
fn claim_due(now: i64, limit: i64) -> ClaimDue {
    ClaimDue {
        node: NODE.to_string(),
        now: t(now),
        lease_until: t(now + 30),
        limit,
    }
}

/// The engine writer's turns: each applies its writes, then claims, on what
/// those writes left; every turn the writer has ready is run, in order.
#[tokio::test]
async fn writer_turns_apply_then_claim() {
    let (_dir, sqlite) = sqlite_store().await;
    let store: &dyn Store = &sqlite;
    let mut recurring = with_steps(new_task("recurring"), &["w/a"]);
    recurring.run_interval = 10;
    create(store, recurring, 0).await;
    let later = {
        let mut task = with_steps(new_task("later"), &["w/b"]);
        task.start_at = Some(t(20));
        create(store, task, 0).await
    };
    let first = claim_one(store, 1).await;
    let step = first.steps[0].step_run_id;
    let mut back_in_ten = run_end(RunStatus::Completed, TaskStatus::Scheduled, 5);
    back_in_ten.next_run_at = Some(t(15));
    let mut turns = ScriptedTurns::default();
    turns.turns.extend([
        WriterTurn {
            ops: vec![
                WriteOp::StartStep {
                    step_run_id: step,
                    module_hash: Some("h".into()),
                    at: t(2),
                },
                WriteOp::FinishStep {
                    step_run_id: step,
                    end: step_end(StepRunStatus::Completed, 4),
                },
                WriteOp::FinishRun {
                    task_id: first.task.id,
                    run_id: first.run_id,
                    end: back_in_ten,
                    claimed_version: None,
                },
            ],
            // Due by then: the recurring task again (its end is in this
            // turn) and the later one.
            claim: Some(claim_due(25, 10)),
        },
        // A claim alone, with nothing left to claim.
        WriterTurn {
            ops: Vec::new(),
            claim: Some(claim_due(26, 10)),
        },
        // Writes alone: a run's end applies once.
        WriterTurn {
            ops: vec![WriteOp::FinishRun {
                task_id: first.task.id,
                run_id: first.run_id,
                end: run_end(RunStatus::Completed, TaskStatus::Completed, 6),
                claimed_version: None,
            }],
            claim: None,
        },
    ]);
    sqlite.write_turns(&mut turns).await.expect("writer turns");
    let mut results = turns.results.into_iter().map(|r| r.expect("turn"));
    let (applied, claimed) = results.next().expect("first turn");
    assert_eq!(applied, [true, true, true]);
    let mut ids: Vec<i64> = claimed.iter().map(|c| c.task.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [first.task.id, later.id]);
    assert!(claimed.iter().all(|c| c.steps.len() == 1));
    let (applied, claimed) = results.next().expect("second turn");
    assert!(applied.is_empty() && claimed.is_empty());
    let (applied, claimed) = results.next().expect("third turn");
    assert_eq!(applied, [false], "the run had already ended");
    assert!(claimed.is_empty());
    assert!(results.next().is_none());
    let runs = store.list_runs(first.task.id, 5).await.expect("runs");
    assert_eq!(runs.len(), 2, "the recurring task ran again");
    assert_eq!(runs[1].status, RunStatus::Completed);
    assert_eq!(get(store, first.task.id).await.status, TaskStatus::Running);
}
