//! The engine driven directly (no web server): scheduling, step order, faults,
//! retries with resume, checkpoints, cancel, run now, step mode, code upsert,
//! secrets, rescue — each rule of docs/design.md "Lifecycle" has a test here.

mod common;

use chrono::Utc;
use common::module_bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use stepwise::engine::{Engine, EngineConfig, RetryPolicy, RunVerdict};
use stepwise::events::{Event, EventBus};
use stepwise::runtime::{Runtime, RuntimeConfig, StepOutcome};
use stepwise::secrets::SecretBox;
use stepwise::store::{
    Durability, NewStep, NewTask, PostgresStore, Priority, RunStatus, SqliteStore, StepRunStatus,
    StepStatus, Store, TaskPatch, TaskStatus,
};
use tokio::sync::broadcast::error::RecvError;

struct Harness {
    engine: Engine,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

async fn harness_with(configure: impl FnOnce(&mut EngineConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = if common::database::on_postgres() {
        let url = common::database::fresh_postgres_database();
        Arc::new(PostgresStore::open(&url).await.unwrap())
    } else {
        Arc::new(
            SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal)
                .await
                .unwrap(),
        )
    };
    let runtime =
        Arc::new(Runtime::new(RuntimeConfig::local(dir.path().join("compiled"))).unwrap());
    let mut config = EngineConfig::new("test-node");
    config.retry = RetryPolicy {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    configure(&mut config);
    let engine = Engine::new(
        store.clone(),
        runtime.clone(),
        Arc::new(EventBus::new()),
        Arc::new(SecretBox::from_key(&[1; 32])),
        config,
    );
    for path in [
        "demo/count",
        "tool/backup/dumptables",
        "sale/contact/send",
        "fixture/fail",
        "fixture/loop",
        "fixture/noop",
        "fixture/progress",
        "fixture/trap",
    ] {
        let bytes = module_bytes(path);
        let module = runtime.prepare(&bytes).await.unwrap();
        store
            .put_module(path, module.hash(), &bytes, Some("Rust"), None, Utc::now())
            .await
            .unwrap();
    }
    Harness {
        engine,
        store,
        _dir: dir,
    }
}

fn step(controller: &str, settings: Value) -> NewStep {
    NewStep {
        max_execution_time: 10,
        ..NewStep::new(controller, settings)
    }
}

fn task(steps: Vec<NewStep>) -> NewTask {
    NewTask::new("test", steps)
}

impl Harness {
    async fn create(&self, new: NewTask) -> i64 {
        self.store.create_task(new, Utc::now()).await.unwrap().0.id
    }

    /// How many tasks are completed.
    async fn completed(&self) -> i64 {
        let counts = self.store.count_by_status().await.unwrap();
        counts
            .iter()
            .find(|(status, _)| *status == TaskStatus::Completed)
            .map_or(0, |(_, n)| *n)
    }

    async fn status(&self, id: i64) -> TaskStatus {
        self.store.get_task(id).await.unwrap().unwrap().status
    }

    /// Poll until the task has `status`; fail with `why` after `timeout`.
    async fn wait_for_status(&self, id: i64, status: TaskStatus, timeout: Duration, why: &str) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.status(id).await != status {
            assert!(tokio::time::Instant::now() < deadline, "{why}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Run due tasks until the given task is not scheduled-and-due any more.
    async fn run_until_settled(&self, id: i64) {
        for _ in 0..200 {
            self.engine.drain().await.unwrap();
            let task = self.store.get_task(id).await.unwrap().unwrap();
            if task.status != TaskStatus::Scheduled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_one_step_task_completes_and_pins_its_module_hash() {
    let h = harness().await;
    let id = h
        .create(task(vec![step("demo/count", json!({"to": 1000}))]))
        .await;
    let summary = h.engine.try_execute_next().await.unwrap().expect("claimed");
    assert_eq!(summary.verdict, RunVerdict::Succeeded);
    assert_eq!(h.status(id).await, TaskStatus::Completed);
    // The task keeps the run's last progress message, not one saved mid-run.
    let task = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(task.message.as_deref(), Some("counted 1000 of 1000"));
    let runs = h.store.list_runs(id, 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Completed);
    let step_run = &runs[0].steps[0];
    assert_eq!(step_run.status, StepRunStatus::Completed);
    assert_eq!(step_run.result.as_ref().unwrap()["counted"], 1000);
    let module = h.store.get_module("demo/count").await.unwrap().unwrap();
    assert_eq!(step_run.module_hash.as_deref(), Some(module.hash.as_str()));
    assert!(
        h.engine.try_execute_next().await.unwrap().is_none(),
        "nothing left"
    );
}

/// A `?wait=` watches its task's run ends: a run that ends here hands over
/// the task as it left it, which is the stored task, unless the task was
/// changed while it ran (then the waiter reads it).
#[tokio::test]
async fn a_watched_run_end_hands_over_the_stored_task_unless_it_was_edited() {
    let h = harness().await;
    let id = h
        .create(task(vec![step("demo/count", json!({"to": 1000}))]))
        .await;
    let watch = h.engine.watch_run_end(id);
    h.engine.try_execute_next().await.unwrap().expect("claimed");
    let stored = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Completed);
    assert_eq!(watch.ended_task(stored.updated_at), Some(stored));

    let id = h
        .create(task(vec![step(
            "demo/count",
            json!({"to": 4, "sleep_ms_per_report": 100}),
        )]))
        .await;
    let watch = h.engine.watch_run_end(id);
    let engine = h.engine.clone();
    let running = tokio::spawn(async move { engine.try_execute_next().await });
    while h.status(id).await != TaskStatus::Running {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let patch = TaskPatch {
        name: Some("renamed while it ran".into()),
        ..TaskPatch::default()
    };
    h.store.update_task(id, &patch, Utc::now()).await.unwrap();
    running.await.unwrap().unwrap().expect("claimed");
    let stored = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Completed);
    assert_eq!(stored.name, "renamed while it ran");
    assert_eq!(
        watch.ended_task(stored.updated_at),
        None,
        "the waiter reads it"
    );
}

#[tokio::test]
async fn steps_run_in_sort_order_and_disabled_steps_are_skipped() {
    let h = harness().await;
    let mut disabled = step("fixture/fail", json!({}));
    disabled.status = StepStatus::Disabled;
    let mut new = task(vec![
        step("demo/count", json!({"to": 10})),
        disabled,
        step("fixture/noop", json!({})),
    ]);
    new.steps[0].sort_order = 20;
    new.steps[2].sort_order = 10;
    let id = h.create(new).await;
    let summary = h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(summary.verdict, RunVerdict::Succeeded);
    let run = &h.store.list_runs(id, 1).await.unwrap()[0];
    let order: Vec<(&str, StepRunStatus)> = run
        .steps
        .iter()
        .map(|s| (s.controller.as_str(), s.status))
        .collect();
    // sort_order: the disabled step 2, noop 10, count 20.
    assert_eq!(
        order,
        vec![
            ("fixture/fail", StepRunStatus::Skipped),
            ("fixture/noop", StepRunStatus::Completed),
            ("demo/count", StepRunStatus::Completed),
        ]
    );
}

#[tokio::test]
async fn a_fault_interrupts_the_run_only_when_the_step_says_so() {
    let h = harness().await;
    let id = h
        .create(task(vec![
            step("fixture/fail", json!({})),
            step("fixture/noop", json!({})),
        ]))
        .await;
    h.engine.try_execute_next().await.unwrap();
    let run = &h.store.list_runs(id, 1).await.unwrap()[0];
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps[1].status, StepRunStatus::Skipped);
    assert_eq!(h.status(id).await, TaskStatus::Failed);

    let mut tolerant = step("fixture/fail", json!({}));
    tolerant.interrupt_on_step_fault = false;
    let id = h
        .create(task(vec![tolerant, step("fixture/noop", json!({}))]))
        .await;
    h.engine.try_execute_next().await.unwrap();
    let run = &h.store.list_runs(id, 1).await.unwrap()[0];
    assert_eq!(
        run.steps[1].status,
        StepRunStatus::Completed,
        "the run went on"
    );
    assert_eq!(
        run.status,
        RunStatus::Failed,
        "but it failed because a step did"
    );
}

#[tokio::test]
async fn a_retry_backs_off_and_starts_at_the_first_step_that_did_not_succeed() {
    let h = harness().await;
    let mut new = task(vec![
        step("demo/count", json!({"to": 10})),
        step("fixture/fail", json!({"fail_until_attempt": 2})),
    ]);
    new.max_attempts = 3;
    let id = h.create(new).await;
    let first = h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(first.verdict, RunVerdict::Failed);
    let waiting = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(waiting.status, TaskStatus::Scheduled);
    // Measured from the failed run's end, not the clock now: under load the
    // test may read the task after a short backoff has already passed.
    let failed_run = &h.store.list_runs(id, 1).await.unwrap()[0];
    assert!(
        waiting.next_run_at.unwrap() > failed_run.finished_at.unwrap(),
        "backoff puts the retry after the failed run's end"
    );
    h.run_until_settled(id).await;
    assert_eq!(h.status(id).await, TaskStatus::Completed);
    let runs = h.store.list_runs(id, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    let retry = &runs[0];
    assert_eq!(retry.attempt, 2);
    assert_eq!(
        retry.steps[0].status,
        StepRunStatus::Reused,
        "the first step is not run again"
    );
    assert_eq!(retry.steps[1].status, StepRunStatus::Completed);
}

#[tokio::test]
async fn a_permanent_error_fails_the_task_without_retries() {
    let h = harness().await;
    for (settings, error) in [
        // The step says so itself (`StepError::permanent`).
        (json!({"permanent": true}), "failed on purpose, for good"),
        // Settings that do not parse: the SDK marks them permanent.
        (json!({"no_such_setting": 1}), "invalid settings"),
    ] {
        let mut new = task(vec![
            step("fixture/fail", settings),
            step("fixture/noop", json!({})),
        ]);
        new.max_attempts = 3;
        new.steps[0].interrupt_on_step_fault = false;
        let id = h.create(new).await;
        let summary = h.engine.try_execute_next().await.unwrap().unwrap();
        assert_eq!(summary.verdict, RunVerdict::FailedPermanently);
        let task = h.store.get_task(id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Failed, "no retry is scheduled");
        assert_eq!(task.attempts, 1);
        let runs = h.store.list_runs(id, 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        let failed = &runs[0].steps[0];
        assert_eq!(failed.status, StepRunStatus::Failed);
        assert_eq!(failed.outcome.as_ref().unwrap()["permanent"], true);
        let message = failed.error.as_deref().unwrap();
        assert!(
            message.contains("permanent, not retried") && message.contains(error),
            "{message}"
        );
        assert_eq!(
            runs[0].steps[1].status,
            StepRunStatus::Completed,
            "later steps still run when the failed one does not interrupt"
        );
    }

    // A transient error next to it leaves the retry to the policy as before.
    let mut new = task(vec![step("fixture/fail", json!({}))]);
    new.max_attempts = 3;
    let id = h.create(new).await;
    let summary = h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(summary.verdict, RunVerdict::Failed);
    assert_eq!(h.status(id).await, TaskStatus::Scheduled);
}

#[tokio::test]
async fn a_checkpointing_step_resumes_where_it_stopped() {
    let h = harness().await;
    let settings = json!({"tables": [
        {"name": "a", "columns": ["x"], "rows": [[1]]},
        {"name": "b", "columns": ["x"], "rows": [[2]]},
        {"name": "c", "columns": ["x"], "rows": [[3]]}],
        "fail_after_tables": 2});
    let mut new = task(vec![step("tool/backup/dumptables", settings)]);
    new.max_attempts = 2;
    let id = h.create(new).await;
    h.run_until_settled(id).await;
    assert_eq!(h.status(id).await, TaskStatus::Completed);
    let runs = h.store.list_runs(id, 10).await.unwrap();
    let output = runs[0].steps[0].result.clone().unwrap();
    assert_eq!(
        output["resumed_from"], 2,
        "the retry continued from its checkpoint: {output}"
    );
    let dump = stepwise::store::read_artifact(h.store.as_ref(), id, "backup.sql", None)
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(dump).unwrap().contains("INSERT INTO"));
}

#[tokio::test]
async fn cancel_stops_a_scheduled_task_at_once_and_a_running_one_for_real() {
    let h = harness().await;
    let mut later = task(vec![step("fixture/noop", json!({}))]);
    later.start_at = Some(Utc::now() + chrono::Duration::hours(1));
    let id = h.create(later).await;
    assert!(h.engine.cancel(id).await.unwrap(), "cancelled at once");
    assert_eq!(h.status(id).await, TaskStatus::Cancelled);

    let mut endless = step("fixture/loop", json!({}));
    endless.max_execution_time = 600;
    let id = h.create(task(vec![endless])).await;
    let engine = h.engine.clone();
    let running = tokio::spawn(async move { engine.try_execute_next().await });
    while h.status(id).await != TaskStatus::Running {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !h.engine.cancel(id).await.unwrap(),
        "a running task is stopped, not cancelled at once"
    );
    let summary = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.verdict, RunVerdict::Cancelled);
    assert_eq!(summary.steps[0].1, StepOutcome::Cancelled);
    assert_eq!(h.status(id).await, TaskStatus::Cancelled);
}

/// A cancel that lands after the claim is committed and before the run's
/// executor starts was once seen only by the next heartbeat (10 s later; in
/// this test, with no heartbeat loop, never: the loop would run its 600 s).
#[tokio::test]
async fn a_cancel_between_the_claim_and_the_run_stops_the_run_at_once() {
    let h = harness().await;
    let mut endless = step("fixture/loop", json!({}));
    endless.max_execution_time = 600;
    let id = h.create(task(vec![endless])).await;
    let claimed = h.engine.claim_next().await.unwrap().expect("claimed");
    assert_eq!(claimed.task_id(), id);
    assert_eq!(h.status(id).await, TaskStatus::Running);
    assert!(
        !h.engine.cancel(id).await.unwrap(),
        "a claimed task is stopped, not cancelled at once"
    );
    let summary = tokio::time::timeout(Duration::from_secs(5), h.engine.execute(claimed))
        .await
        .expect("the run stops well before any heartbeat");
    assert_eq!(summary.verdict, RunVerdict::Cancelled);
    assert!(
        summary.steps.is_empty(),
        "no step started: {:?}",
        summary.steps
    );
    assert_eq!(h.status(id).await, TaskStatus::Cancelled);
}

/// The note a cancel leaves for a run not started on this node is checked
/// against the store: when the run was another node's, the task's next run
/// here is not stopped by it.
#[tokio::test]
async fn a_cancel_meant_for_another_nodes_run_does_not_stop_a_later_run_here() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let other_runtime =
        Arc::new(Runtime::new(RuntimeConfig::local(dir.path().join("compiled"))).unwrap());
    let other = Engine::new(
        h.store.clone(),
        other_runtime,
        Arc::new(EventBus::new()),
        Arc::new(SecretBox::from_key(&[1; 32])),
        EngineConfig::new("other-node"),
    );
    let id = h.create(task(vec![step("fixture/noop", json!({}))])).await;
    let elsewhere = other
        .claim_next()
        .await
        .unwrap()
        .expect("claimed elsewhere");
    // This node has no run of the task: the cancel leaves a note here.
    assert!(!h.engine.cancel(id).await.unwrap());
    // The other node's run ends (its one step done before it saw the flag).
    other.execute(elsewhere).await;
    h.store.run_task_now(id, None, Utc::now()).await.unwrap();
    let here = h.engine.claim_next().await.unwrap().expect("claimed here");
    let summary = h.engine.execute(here).await;
    assert_eq!(summary.verdict, RunVerdict::Succeeded);
    assert_eq!(h.status(id).await, TaskStatus::Completed);
}

#[tokio::test]
async fn run_now_ignores_the_schedule_and_a_single_step_can_run_alone() {
    let h = harness().await;
    let mut later = task(vec![
        step("fixture/noop", json!({})),
        step("demo/count", json!({"to": 5})),
    ]);
    later.start_at = Some(Utc::now() + chrono::Duration::hours(1));
    let id = h.create(later).await;
    assert!(
        h.engine.try_execute_next().await.unwrap().is_none(),
        "not due yet"
    );
    h.store.run_task_now(id, None, Utc::now()).await.unwrap();
    assert!(h.engine.try_execute_next().await.unwrap().is_some());
    assert_eq!(h.status(id).await, TaskStatus::Completed);

    let second_step = h.store.get_task(id).await.unwrap().unwrap().steps[1].id;
    h.store
        .run_task_now(id, Some(second_step), Utc::now())
        .await
        .unwrap();
    let summary = h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(summary.steps.len(), 1, "only that step ran");
    assert_eq!(summary.steps[0].0, second_step);
}

#[tokio::test]
async fn a_recurring_task_returns_to_scheduled_after_each_run() {
    let h = harness().await;
    let mut recurring = task(vec![step("fixture/noop", json!({}))]);
    recurring.run_interval = 60;
    let id = h.create(recurring).await;
    h.engine.try_execute_next().await.unwrap();
    let task = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Scheduled);
    let gap = task.next_run_at.unwrap() - Utc::now();
    assert!(
        gap > chrono::Duration::seconds(55) && gap <= chrono::Duration::seconds(60),
        "{gap}"
    );
}

#[tokio::test]
async fn the_task_time_limit_interrupts_a_long_step() {
    let h = harness().await;
    let mut endless = step("fixture/loop", json!({}));
    endless.max_execution_time = 600;
    let mut new = task(vec![endless]);
    new.max_execution_time = 1;
    let id = h.create(new).await;
    let summary = h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(summary.verdict, RunVerdict::Interrupted);
    assert!(matches!(
        summary.steps[0].1,
        StepOutcome::OutOfFuel { .. } | StepOutcome::Deadline { .. }
    ));
    let run = &h.store.list_runs(id, 1).await.unwrap()[0];
    assert_eq!(run.steps[0].status, StepRunStatus::Interrupted);
}

#[tokio::test]
async fn a_missing_module_fails_the_step_and_an_inactive_one_holds_the_task() {
    let h = harness().await;
    let id = h.create(task(vec![step("nothing/here", json!({}))])).await;
    h.engine.try_execute_next().await.unwrap();
    let run = &h.store.list_runs(id, 1).await.unwrap()[0];
    assert!(
        run.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("not registered"),
        "{:?}",
        run.steps[0].error
    );

    h.store
        .set_module_active("fixture/noop", false, Utc::now())
        .await
        .unwrap();
    let id = h.create(task(vec![step("fixture/noop", json!({}))])).await;
    assert!(
        h.engine.try_execute_next().await.unwrap().is_none(),
        "held while inactive"
    );
    h.store
        .set_module_active("fixture/noop", true, Utc::now())
        .await
        .unwrap();
    h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(h.status(id).await, TaskStatus::Completed);
}

#[tokio::test]
async fn higher_priority_runs_first() {
    let h = harness().await;
    let mut low = task(vec![step("fixture/noop", json!({}))]);
    low.priority = Priority::Low;
    let low = h.create(low).await;
    let mut high = task(vec![step("fixture/noop", json!({}))]);
    high.priority = Priority::High;
    let high = h.create(high).await;
    assert_eq!(
        h.engine.try_execute_next().await.unwrap().unwrap().task_id,
        high
    );
    assert_eq!(
        h.engine.try_execute_next().await.unwrap().unwrap().task_id,
        low
    );
}

#[tokio::test]
async fn secrets_reach_the_step_and_nothing_else() {
    let h = harness().await;
    let mut new = task(vec![step(
        "sale/contact/send",
        json!({"template": "Hi {{name}}", "subject": "s", "recipients": [{"email": "a@b.c", "name": "A"}]}),
    )]);
    new.secrets = vec![
        h.engine
            .secrets()
            .seal("mail_api_key", "super-secret-value"),
    ];
    let id = h.create(new).await;
    let summary = h.engine.try_execute_next().await.unwrap().unwrap();
    assert_eq!(
        summary.verdict,
        RunVerdict::Succeeded,
        "{:?}",
        summary.steps
    );
    let task = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(task.secret_names, vec!["mail_api_key".to_string()]);
    assert!(
        !serde_json::to_string(&task)
            .unwrap()
            .contains("super-secret-value")
    );
    h.engine.event_writer().flush(Duration::from_secs(5)).await;
    let events = h.store.list_events(id, false, 1000).await.unwrap();
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("super-secret-value")
    );
}

#[tokio::test]
async fn a_run_whose_lease_expired_is_rescued_and_retried() {
    let h = harness().await;
    let mut new = task(vec![step("fixture/noop", json!({}))]);
    new.max_attempts = 2;
    let id = h.create(new).await;
    // A node claims it and dies: the lease is already over.
    let now = Utc::now();
    let claimed = h
        .store
        .claim_due("dead-node", now, now - chrono::Duration::seconds(1), 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(h.engine.rescue_expired().await.unwrap(), 1);
    let runs = h.store.list_runs(id, 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Interrupted);
    h.run_until_settled(id).await;
    assert_eq!(h.status(id).await, TaskStatus::Completed);
    // The dead node's run is counted apart, not as the task's failure.
    let now = Utc::now();
    let stats = h
        .store
        .performance(now - chrono::Duration::hours(1), now)
        .await
        .unwrap();
    assert_eq!(
        (stats.completed, stats.failed, stats.rescued),
        (1, 0, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_task_whose_runs_keep_dying_with_their_node_is_not_rescued_forever() {
    let h = harness().await;
    let mut new = task(vec![step("fixture/noop", json!({}))]);
    new.max_attempts = 2;
    let id = h.create(new).await;
    // Node after node claims it and dies (the lease is already over). The
    // first three rescues are free; the fourth counts as an attempt (one is
    // left: retried later), the fifth as the last one.
    let lease_over = Utc::now() - chrono::Duration::seconds(1);
    let mut claim_at = Utc::now();
    for rescue in 1..=5 {
        let claimed = h
            .store
            .claim_due("dying-node", claim_at, lease_over, 1)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "claim before rescue {rescue}");
        assert_eq!(h.engine.rescue_expired().await.unwrap(), 1);
        let task = h.store.get_task(id).await.unwrap().unwrap();
        let expected = match rescue {
            1..=3 => (TaskStatus::Scheduled, 0),
            4 => (TaskStatus::Scheduled, 1),
            _ => (TaskStatus::Failed, 2),
        };
        assert_eq!(
            (task.status, task.attempts),
            expected,
            "after rescue {rescue}"
        );
        if rescue >= 4 {
            let message = task.message.unwrap_or_default();
            assert!(message.contains("counts as an attempt"), "{message}");
        }
        // The retry after a counted rescue waits its backoff.
        claim_at = task.next_run_at.unwrap_or(claim_at).max(claim_at);
    }
    let runs = h.store.list_runs(id, 10).await.unwrap();
    assert_eq!(runs.len(), 5);
    assert!(
        runs.iter()
            .all(|r| r.rescued && r.status == RunStatus::Interrupted)
    );
}

#[tokio::test]
async fn progress_events_reach_the_bus_in_order_and_never_go_back() {
    let h = harness().await;
    let mut events = h.engine.bus().subscribe();
    let id = h
        .create(task(vec![step("demo/count", json!({"to": 100000}))]))
        .await;
    h.engine.try_execute_next().await.unwrap();
    let mut last_seq = 0;
    let mut last_progress = 0.0;
    let mut saw_final = false;
    while let Ok(event) = events.try_recv() {
        if event.task_id() != id {
            continue;
        }
        assert!(event.seq() > last_seq, "seq increases");
        last_seq = event.seq();
        if let Event::Task(state) = event {
            if state.status == "running" {
                assert!(state.progress >= last_progress, "never backwards");
                last_progress = state.progress;
            } else {
                saw_final = state.status == "completed";
            }
        }
    }
    assert_eq!(last_progress, 100.0);
    assert!(saw_final);
}

/// A running step's progress reaches the store while it runs (about once a
/// second, through the run's group commits), so a restart or another reader
/// sees where the run is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_saved_while_the_step_runs() {
    let h = Arc::new(harness().await);
    let id = h
        .create(task(vec![step(
            "fixture/progress",
            json!({"updates": 40, "sleep_ms": 50}),
        )]))
        .await;
    let running = {
        let h = h.clone();
        tokio::spawn(async move { h.engine.try_execute_next().await.unwrap() })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let task = h.store.get_task(id).await.unwrap().unwrap();
        if task.status == TaskStatus::Running && task.progress > 0.0 {
            assert!(task.progress < 100.0, "{task:?}");
            let message = task.message.unwrap_or_default();
            assert!(message.starts_with("update "), "{message}");
            let run = &h.store.list_runs(id, 1).await.unwrap()[0];
            assert_eq!(run.steps[0].status, StepRunStatus::Running);
            assert!(run.steps[0].progress > 0.0, "{:?}", run.steps[0]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress stored while the step ran: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = running.await.unwrap().expect("a run");
    assert_eq!(summary.verdict, RunVerdict::Succeeded);
    let task = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!((task.status, task.progress), (TaskStatus::Completed, 100.0));
}

#[tokio::test]
async fn retention_removes_old_runs_but_keeps_the_latest() {
    let h = harness().await;
    let mut recurring = task(vec![step("fixture/noop", json!({}))]);
    recurring.run_interval = 1;
    let id = h.create(recurring).await;
    for _ in 0..3 {
        h.store.run_task_now(id, None, Utc::now()).await.unwrap();
        h.engine.try_execute_next().await.unwrap().unwrap();
    }
    assert_eq!(h.store.list_runs(id, 10).await.unwrap().len(), 3);
    let removed = h
        .engine
        .prune_history(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert!(removed >= 2, "{removed}");
    let runs = h.store.list_runs(id, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "the latest run stays");
}

/// A long step then an instant one: once the task has a history, halfway
/// through the long step is halfway through the run, and the ETA says so
/// (weighing the steps the same said a quarter, and three times the time
/// left).
#[tokio::test]
async fn steps_weigh_on_the_bar_and_the_eta_by_their_past_durations() {
    let h = harness().await;
    let id = h
        .create(task(vec![
            step("fixture/progress", json!({"updates": 10, "sleep_ms": 100})),
            step("fixture/noop", json!({})),
        ]))
        .await;
    h.engine
        .try_execute_next()
        .await
        .unwrap()
        .expect("first run");
    assert_eq!(h.status(id).await, TaskStatus::Completed);

    h.store.run_task_now(id, None, Utc::now()).await.unwrap();
    assert_weighed_by_the_long_step(&h, id).await;
}

/// A task's first run has no history of its own: its steps weigh what their
/// modules took lately in other tasks on this node.
#[tokio::test]
async fn a_first_run_weighs_its_steps_by_their_modules_past_durations() {
    let h = harness().await;
    let long_then_instant = || {
        task(vec![
            step("fixture/progress", json!({"updates": 10, "sleep_ms": 100})),
            step("fixture/noop", json!({})),
        ])
    };
    let other = h.create(long_then_instant()).await;
    h.engine
        .try_execute_next()
        .await
        .unwrap()
        .expect("other task's run");
    assert_eq!(h.status(other).await, TaskStatus::Completed);

    let id = h.create(long_then_instant()).await;
    assert_weighed_by_the_long_step(&h, id).await;
}

/// Runs the due task `id` and checks the task event sent halfway through its
/// long first step (`fixture/progress`, 10 updates; then an instant step):
/// the bar is near half, not at a quarter, and the ETA is about as long
/// again as the time so far.
async fn assert_weighed_by_the_long_step(h: &Harness, id: i64) {
    let mut events = h.engine.bus().subscribe();
    h.engine.try_execute_next().await.unwrap().expect("a run");
    let run_started = h.store.list_runs(id, 1).await.unwrap()[0].started_at;
    let mut halfway = None;
    while let Ok(event) = events.try_recv() {
        if let Event::Task(state) = event
            && state.task_id == id
            && state.message.as_deref() == Some("update 5 of 10")
        {
            halfway = Some(state);
        }
    }
    let halfway = halfway.expect("the long step's halfway report");
    assert!(
        (45.0..=55.0).contains(&halfway.progress),
        "halfway through the long step: {}",
        halfway.progress
    );
    let elapsed = (halfway.updated_at - run_started).num_milliseconds() as f64 / 1e3;
    let eta = halfway.eta_seconds.expect("an ETA");
    assert!(
        eta < 2.0 * elapsed,
        "about as long again as so far ({elapsed:.2} s), not three times: {eta:.2} s"
    );
}

/// After a claim that took all it asked for, the claim loop waits for a
/// quarter of the workers to be free (a backlog is claimed in batches). With
/// every worker held by a long step, that wait was until those steps ended:
/// a new task waited behind them with a worker free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_gets_a_free_worker_while_long_steps_hold_the_others() {
    let h = harness_with(|config| {
        config.workers = 8;
        config.poll_interval = Duration::from_millis(20);
    })
    .await;
    let mut endless = Vec::new();
    for _ in 0..8 {
        let mut step = step("fixture/loop", json!({}));
        step.max_execution_time = 600;
        endless.push(h.create(task(vec![step])).await);
    }
    let handle = h.engine.start();
    while h.engine.running_runs().len() < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!h.engine.cancel(endless[0]).await.unwrap());
    let id = h.create(task(vec![step("fixture/noop", json!({}))])).await;
    h.engine.wake();
    h.wait_for_status(
        id,
        TaskStatus::Completed,
        Duration::from_secs(10),
        "the new task was not run with a worker free",
    )
    .await;
    for id in &endless[1..] {
        h.engine.cancel(*id).await.unwrap();
    }
    handle.shutdown().await;
}

/// A horizon over which any machine frees a few slots running no-op steps,
/// so that the tests of claiming ahead do not depend on the machine's speed.
const CLAIM_AHEAD_ON_ANY_MACHINE: Duration = Duration::from_secs(1);

/// Runs that end quickly are claimed ahead of the workers (see
/// `server/src/engine/workers.rs`): a claim answered after the writer's next
/// commit would otherwise leave the workers that freed meanwhile idle. Never
/// more than about a claim batch waits, and every task runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_runs_are_claimed_ahead_of_the_workers_and_each_runs_once() {
    const TASKS: usize = 400;
    let h = harness_with(|config| {
        config.workers = 2;
        config.claim_batch = 16;
        // The default horizon claims ahead only once runs end faster than
        // one per 10 ms, which a debug build beside other tests may not.
        config.claim_ahead = CLAIM_AHEAD_ON_ANY_MACHINE;
    })
    .await;
    let tasks = (0..TASKS)
        .map(|_| task(vec![step("fixture/noop", json!({}))]))
        .collect();
    let created = h.store.create_tasks(tasks, Utc::now()).await.unwrap();
    let ids: Vec<i64> = created.into_iter().map(|c| c.unwrap().0.id).collect();
    let handle = h.engine.start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let completed = h.completed().await;
        if completed == TASKS as i64 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let counts = h.store.count_by_status().await.unwrap();
            panic!("{completed} of {TASKS} tasks completed in 60 s: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.shutdown().await;
    // The engine keeps the most that waited at once: runs claimed ahead of
    // two quick workers wait a millisecond or so, which a sample of the
    // count from here (between reads of the store, in a debug build beside
    // other tests) can miss altogether.
    let most_waiting = h.engine.most_runs_claimed_ahead();
    assert!(most_waiting > 0, "no run was claimed ahead of the workers");
    // A claim takes the free workers it counted, or one fewer when a
    // create took one meanwhile (none here).
    assert!(
        most_waiting <= 16,
        "at most a claim batch waits for the workers, not {most_waiting}"
    );
    assert_eq!(h.engine.runs_claimed_ahead(), 0);
    for id in ids {
        let runs = h.store.list_runs(id, 10).await.unwrap();
        assert_eq!(runs.len(), 1, "task {id} ran {} times", runs.len());
    }
}

/// What the engine and the store say of a task whose run was claimed ahead:
/// for a failure's message, so that a rare one can be told apart (the run
/// not registered, the cancel not recorded, the run's end not written).
async fn claimed_ahead_state(h: &Harness, task_id: i64) -> String {
    let runs = h.store.list_runs(task_id, 10).await.unwrap_or_default();
    let mut said = format!(
        "task {task_id} is {:?}; waiting claimed ahead: {}; runs executing here: {:?}",
        h.status(task_id).await,
        h.engine.runs_claimed_ahead(),
        h.engine.running_runs(),
    );
    for run in runs {
        let cancel = h.store.cancel_requested(run.id).await;
        said += &format!(
            "; run {} {:?} (cancel requested: {cancel:?}, message {:?})",
            run.id, run.status, run.message
        );
    }
    said
}

/// A run claimed ahead waits for a worker; a cancel ends it at once, without
/// one, while the step that holds the only worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_claimed_ahead_is_cancelled_without_waiting_for_a_worker() {
    let h = harness_with(|config| {
        config.workers = 1;
        config.claim_batch = 8;
        config.claim_ahead = CLAIM_AHEAD_ON_ANY_MACHINE;
    })
    .await;
    // Quick runs first, so that the node measures a rate of runs ending and
    // claims ahead; once they are all done, a step that holds the one worker,
    // and only once it runs, the tasks behind it. Made before it runs, a task
    // behind could take the worker first (runs claimed in one batch take it
    // in no set order), and be seen still running while its end commits.
    let quick = (0..300)
        .map(|_| task(vec![step("fixture/noop", json!({}))]))
        .collect();
    h.store.create_tasks(quick, Utc::now()).await.unwrap();
    let handle = h.engine.start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.completed().await < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quick tasks did not complete"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut events = h.engine.bus().subscribe();
    let mut endless = step("fixture/loop", json!({}));
    endless.max_execution_time = 600;
    let held = h.create(task(vec![endless])).await;
    h.engine.wake();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Event::Step(state))) if state.task_id == held && state.status == "running" => {
                break;
            }
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) | Err(_) => panic!("the held step never started"),
        }
    }
    let behind: Vec<i64> = h
        .store
        .create_tasks(
            (0..4)
                .map(|_| task(vec![step("fixture/noop", json!({}))]))
                .collect(),
            Utc::now(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.unwrap().0.id)
        .collect();
    h.engine.wake();
    // A run behind that the engine has registered: the store says a task is
    // running from its claim's commit, a moment before the claim loop hands
    // the run to an executor, and a cancel in that moment takes another path
    // (an early note, `engine/running.rs`).
    let waiting = loop {
        let registered = h.engine.running_runs();
        let mut waiting = None;
        for id in &behind {
            let task = h.store.get_task(*id).await.unwrap().unwrap();
            if task
                .current_run_id
                .is_some_and(|run| registered.contains(&run))
            {
                waiting = Some(*id);
            }
        }
        if let Some(id) = waiting {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run was claimed ahead behind the held worker"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(h.engine.runs_claimed_ahead() > 0);
    assert_eq!(h.status(held).await, TaskStatus::Running);
    h.engine.cancel(waiting).await.unwrap();
    let cancelled_by = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.status(waiting).await != TaskStatus::Cancelled {
        if tokio::time::Instant::now() >= cancelled_by {
            panic!(
                "the run claimed ahead waited for the worker: {}",
                claimed_ahead_state(&h, waiting).await
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        h.status(held).await,
        TaskStatus::Running,
        "the held step goes on"
    );
    h.engine.cancel(held).await.unwrap();
    for id in &behind {
        h.engine.cancel(*id).await.unwrap();
    }
    handle.shutdown().await;
}
