//! The store conformance suite (river's `riverdrivertest`): every case is an
//! async function over `&dyn Store`, so each implementation runs the same
//! cases. An implementation opts in with one line,
//! `conformance!(factory);`, where `factory().await` returns `(guard, store)`
//! — a fresh, empty store and whatever must live as long as it (a temp dir).
//! SQLite does so in `tests/sqlite.rs`.

use super::*;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// One `#[tokio::test]` per case, named after it.
macro_rules! conformance_cases {
    ($factory:path => $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((_guard, store)) = $crate::store::tests::Fresh::fresh($factory().await) else {
                    return;
                };
                let store: std::sync::Arc<dyn $crate::store::Store> = std::sync::Arc::new(store);
                $crate::store::tests::$module::$case($crate::store::tests::CaseStore::of(&store)).await;
                $crate::store::tests::counts_agree_with_the_tasks(store.as_ref()).await;
                $crate::store::tests::NoOrphans::assert_no_orphans(&_guard).await;
            }
        )*
    };
}

/// Every conformance case, against the stores `$factory` makes.
macro_rules! conformance {
    ($factory:path) => {
        conformance_cases!($factory =>
            tasks::create_and_get,
            tasks::create_disabled_or_later,
            tasks::create_batch_matches_single_creates,
            tasks::code_upsert_replaces_definition,
            tasks::code_upsert_conflicts_while_running,
            tasks::list_filters_and_order,
            tasks::list_cursor_stable_under_inserts,
            tasks::update_patches_fields,
            tasks::update_disable_and_enable,
            tasks::delete_task_and_everything_it_owns,
            secrets_and_ids::code_upsert_keeps_secrets_it_does_not_mention,
            secrets_and_ids::update_sets_and_removes_secrets,
            secrets_and_ids::ids_are_never_reused_after_a_delete,
            actions::run_now_from_finished,
            actions::run_now_single_step,
            actions::make_scheduled_due_brings_forward_only_scheduled_tasks,
            actions::retry_resumes_last_run,
            actions::cancel_scheduled_is_immediate,
            actions::cancel_running_sets_flag,
            actions::delete_finished_tasks_by_age_and_status,
            actions::count_by_status_lists_every_status,
            claims::claim_order_priority_then_due,
            claims::claim_marks_running_and_plans_steps,
            claims::claim_waits_for_inactive_modules,
            claims::concurrent_claims_never_overlap,
            claims::leases_heartbeat_and_expiry,
            claims::a_create_claims_its_task_when_nothing_else_is_due,
            limits::module_max_running_caps_a_claim_and_frees_on_run_end,
            limits::module_rate_counts_the_starts_of_the_last_minute,
            limits::task_rate_holds_back_its_own_runs,
            limits::concurrent_claims_never_exceed_a_modules_room,
            runs::finish_run_applies_once,
            runs::recurring_task_returns_to_scheduled,
            runs::finish_step_never_twice,
            runs::batched_writes_match_single_writes,
            runs::batched_progress_keeps_the_last_value_and_message,
            runs::the_run_writer_keeps_order_and_claims,
            runs::a_waited_run_end_says_whether_its_task_is_as_claimed,
            runs::resume_reuses_completed_steps,
            runs::rescued_run_is_retried_with_reuse,
            runs::step_progress_is_saved,
            runs::list_runs_and_durations,
            blobs::checkpoints_round_trip,
            blobs::artifacts_append_and_cap,
            blobs::artifacts_newest_run_first,
            artifacts::artifact_appends_read_back_in_order,
            artifacts::artifact_cap_is_checked_before_writing,
            artifacts::artifacts_are_carried_into_a_resuming_run,
            blobs::modules_register_and_activate,
            blobs::module_metadata_round_trips,
            blobs::tasks_on_missing_modules_are_listed,
            records::events_batch_and_tail,
            records::logs_filter_and_page,
            records::tokens_find_and_revoke,
            records::prune_keeps_latest_runs,
            stats::performance_totals_modules_and_hours,
            stats::alert_facts_backlog_running_and_failing_modules,
            stats::rescued_runs_are_counted_apart,
            runs::a_retry_that_succeeds_clears_the_last_error,
            schedules_and_steps::cron_schedule_round_trips,
            schedules_and_steps::patching_the_schedule_moves_the_next_run,
            schedules_and_steps::steps_are_added_changed_reordered_and_removed,
            schedules_and_steps::a_claimed_run_keeps_the_steps_it_started_with,
            schedules_and_steps::a_retry_runs_a_changed_step_again,
            schedules_and_steps::a_step_about_to_run_alone_is_not_removed,
            hooks::hook_url_is_kept_patched_and_replaced,
            hooks::a_run_end_queues_one_delivery,
            hooks::deliveries_are_claimed_tried_and_delivered,
            hooks::a_failed_delivery_is_retried_by_hand,
            hooks::concurrent_hook_claims_never_overlap,
            hooks::prune_keeps_a_run_until_its_hook_is_delivered,
        );
    };
}

// Declared after the macros so they are in scope (textual macro scoping).
mod actions;
mod artifacts;
mod blobs;
mod claims;
mod hooks;
mod limits;
mod postgres;
mod records;
mod runs;
mod schedules_and_steps;
mod secrets_and_ids;
mod sqlite;
mod stats;
mod tasks;

// ---- fixtures ----------------------------------------------------------------

/// What a factory gives a case: a store (with its guard), or — for a
/// factory whose server may be missing on a developer's machine, like
/// PostgreSQL's — `None`, and the case returns at once (the factory said
/// why).
pub(crate) trait Fresh<G, S> {
    fn fresh(self) -> Option<(G, S)>;
}

impl<G, S> Fresh<G, S> for (G, S) {
    fn fresh(self) -> Option<(G, S)> {
        Some(self)
    }
}

impl<G, S> Fresh<G, S> for Option<(G, S)> {
    fn fresh(self) -> Option<(G, S)> {
        self
    }
}

/// After every case: the counts by status (kept apart from the tasks, see
/// `count_by_status`) are those of the tasks the store lists.
pub(crate) async fn counts_agree_with_the_tasks(store: &dyn Store) {
    let mut listed: std::collections::BTreeMap<TaskStatus, i64> = Default::default();
    let mut filter = TaskFilter {
        limit: 500,
        ..TaskFilter::default()
    };
    loop {
        let page = store.list_tasks(&filter).await.expect("list tasks");
        for task in &page {
            *listed.entry(task.status).or_default() += 1;
        }
        match page.last() {
            Some(last) if page.len() as i64 == filter.limit => filter.before_id = Some(last.id),
            _ => break,
        }
    }
    for (status, counted) in store.count_by_status().await.expect("counts") {
        let listed = listed.get(&status).copied().unwrap_or(0);
        assert_eq!(
            counted, listed,
            "{status}: counted {counted}, but {listed} such tasks are listed"
        );
    }
}

/// After every case: no row is left without the row it belongs to. A
/// factory's guard knows where its store's rows are; PostgreSQL's must
/// check what its deletes write out by hand (migration 0014).
#[async_trait::async_trait]
pub(crate) trait NoOrphans {
    async fn assert_no_orphans(&self);
}

/// What a case takes: most `&dyn Store`, a few the `Arc` (to make a run
/// writer, say).
pub(crate) trait CaseStore<'a> {
    fn of(store: &'a std::sync::Arc<dyn Store>) -> Self;
}

impl<'a> CaseStore<'a> for &'a dyn Store {
    fn of(store: &'a std::sync::Arc<dyn Store>) -> Self {
        store.as_ref()
    }
}

impl<'a> CaseStore<'a> for std::sync::Arc<dyn Store> {
    fn of(store: &'a std::sync::Arc<dyn Store>) -> Self {
        store.clone()
    }
}

/// Single writes and whole reads, for tests: the store itself offers only
/// the batch ([`Store::apply_writes`]) and the streamed artifact.
#[async_trait::async_trait]
pub(crate) trait SingleWrites {
    async fn start_step(
        &self,
        step_run_id: i64,
        hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn finish_step(&self, step_run_id: i64, end: &StepRunEnd) -> StoreResult<bool>;
    async fn save_step_progress(
        &self,
        run_id: i64,
        step_run_id: i64,
        step_progress: f64,
        task_progress: f64,
        message: Option<&str>,
    ) -> StoreResult<()>;
    async fn read_artifact(
        &self,
        task_id: i64,
        name: &str,
        run_id: Option<i64>,
    ) -> StoreResult<Option<Vec<u8>>>;
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> SingleWrites for S {
    async fn start_step(
        &self,
        step_run_id: i64,
        hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let op = WriteOp::StartStep {
            step_run_id,
            module_hash: hash.map(str::to_string),
            at,
        };
        self.apply_writes(&[op]).await.map(|_| ())
    }

    async fn finish_step(&self, step_run_id: i64, end: &StepRunEnd) -> StoreResult<bool> {
        let op = WriteOp::FinishStep {
            step_run_id,
            end: end.clone(),
        };
        Ok(self.apply_writes(&[op]).await?[0].applied())
    }

    async fn save_step_progress(
        &self,
        run_id: i64,
        step_run_id: i64,
        step_progress: f64,
        task_progress: f64,
        message: Option<&str>,
    ) -> StoreResult<()> {
        let op = WriteOp::SaveProgress {
            run_id,
            step_run_id,
            step_progress,
            task_progress,
            message: message.map(str::to_string),
        };
        self.apply_writes(&[op]).await.map(|_| ())
    }

    async fn read_artifact(
        &self,
        task_id: i64,
        name: &str,
        run_id: Option<i64>,
    ) -> StoreResult<Option<Vec<u8>>> {
        super::read_artifact(self, task_id, name, run_id).await
    }
}

pub(crate) const NODE: &str = "node-a";

/// A fixed clock: `t(s)` is `s` seconds after an arbitrary epoch.
pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + secs, 0).expect("valid time")
}

pub(crate) fn new_step(controller: &str, sort_order: i64) -> NewStep {
    NewStep {
        sort_order,
        controller: controller.to_string(),
        settings: json!({ "order": sort_order }),
        max_execution_time: 60,
        max_memory: None,
        interrupt_on_step_fault: true,
        status: StepStatus::Scheduled,
    }
}

/// A one-step, normal-priority, run-once task due when created.
pub(crate) fn new_task(name: &str) -> NewTask {
    NewTask {
        name: name.to_string(),
        code: None,
        priority: Priority::Normal,
        start_at: None,
        run_interval: 0,
        cron: None,
        timezone: "UTC".to_string(),
        max_execution_time: 600,
        max_attempts: 3,
        created_by: Some("tester".to_string()),
        details: Map::new(),
        secrets: Vec::new(),
        keep_secrets: false,
        disabled: false,
        hook_url: None,
        max_starts_per_minute: None,
        steps: vec![new_step("test/noop", 1)],
    }
}

pub(crate) fn with_steps(mut task: NewTask, controllers: &[&str]) -> NewTask {
    task.steps = controllers
        .iter()
        .zip(1..)
        .map(|(c, i)| new_step(c, i))
        .collect();
    task
}

/// Registers the module `m/off` (hash `h-off`) and deactivates it.
pub(crate) async fn put_inactive_module(store: &dyn Store) {
    store
        .put_module("m/off", "h-off", b"off", None, None, t(0))
        .await
        .expect("put module");
    store
        .set_module_active("m/off", false, t(0))
        .await
        .expect("deactivate");
}

pub(crate) async fn create(store: &dyn Store, task: NewTask, now: i64) -> Task {
    store
        .create_task(task, t(now))
        .await
        .expect("create task")
        .0
}

/// Claim as [`NODE`] at `now` with a 30 s lease.
pub(crate) async fn claim(store: &dyn Store, now: i64, limit: i64) -> Vec<ClaimedRun> {
    store
        .claim_due(NODE, t(now), t(now + 30), limit)
        .await
        .expect("claim")
}

pub(crate) async fn claim_one(store: &dyn Store, now: i64) -> ClaimedRun {
    let mut claimed = claim(store, now, 1).await;
    assert_eq!(claimed.len(), 1, "expected one due task at t({now})");
    claimed.remove(0)
}

pub(crate) fn step_end(status: StepRunStatus, at: i64) -> StepRunEnd {
    let completed = status == StepRunStatus::Completed;
    StepRunEnd {
        status,
        outcome: json!({ "status": status.as_str() }),
        result: completed.then(|| json!({ "ok": true, "at": at })),
        error: (!completed).then(|| format!("step {}", status.as_str())),
        progress: if completed { 100.0 } else { 50.0 },
        message: Some(format!("{} at {at}", status.as_str())),
        fuel_used: 1_000,
        peak_memory: 65_536,
        finished_at: t(at),
    }
}

/// A run ending at `at` that leaves its task scheduled for a retry at
/// `retry_at`, resuming this run; `attempts` is the attempts made so far.
pub(crate) fn retry_end(run_status: RunStatus, at: i64, retry_at: i64, attempts: i64) -> RunEnd {
    RunEnd {
        next_run_at: Some(t(retry_at)),
        attempts,
        resume_next: true,
        ..run_end(run_status, TaskStatus::Scheduled, at)
    }
}

pub(crate) fn run_end(run_status: RunStatus, task_status: TaskStatus, at: i64) -> RunEnd {
    RunEnd {
        run_status,
        message: Some(format!("run {}", run_status.as_str())),
        finished_at: t(at),
        task_status,
        last_result: match run_status {
            RunStatus::Completed => RunResult::Success,
            RunStatus::Interrupted | RunStatus::Cancelled => RunResult::Interrupted,
            RunStatus::Failed | RunStatus::Running => RunResult::Failed,
        },
        next_run_at: None,
        attempts: 0,
        resume_next: false,
        progress: 100.0,
        rescued: false,
    }
}

/// Run every pending step of a claimed run to completion and end it.
pub(crate) async fn complete(store: &dyn Store, claimed: &ClaimedRun, at: i64) {
    for planned in claimed
        .steps
        .iter()
        .filter(|p| p.status == StepRunStatus::Pending)
    {
        store
            .start_step(planned.step_run_id, Some("hash"), t(at))
            .await
            .expect("start step");
        let written = store
            .finish_step(planned.step_run_id, &step_end(StepRunStatus::Completed, at))
            .await
            .expect("finish step");
        assert!(written);
    }
    let applied = store
        .finish_run(
            claimed.task.id,
            claimed.run_id,
            &run_end(RunStatus::Completed, TaskStatus::Completed, at),
        )
        .await
        .expect("finish run");
    assert!(applied);
}

pub(crate) async fn get(store: &dyn Store, id: i64) -> Task {
    store
        .get_task(id)
        .await
        .expect("get task")
        .expect("task exists")
}

pub(crate) fn statuses(claimed: &ClaimedRun) -> Vec<StepRunStatus> {
    claimed.steps.iter().map(|p| p.status).collect()
}

pub(crate) fn details(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub(crate) fn log_event(task_id: i64, message: &str, at: i64) -> EventRecord {
    EventRecord {
        task_id,
        run_id: None,
        step_id: None,
        kind: "log".into(),
        level: Some("info".into()),
        message: message.into(),
        data: None,
        created_at: t(at),
    }
}

/// Deferred creates (see [`Store::create_tasks_deferred`]), for a store
/// that defers them: `uncovered` says whether one is not yet known to be
/// durable. A create is covered by the next synced commit that wrote (a
/// run's end, a synced create, a create with secrets) or by
/// `sync_deferred`, and not by a claim, which is not synced.
pub(crate) async fn deferred_creates_are_covered(store: &dyn Store, uncovered: &dyn Fn() -> bool) {
    assert!(!uncovered(), "nothing deferred yet");
    let deferred = store
        .create_tasks_deferred(vec![with_steps(new_task("waited"), &["m/a"])], t(0))
        .await
        .expect("create");
    assert!(deferred[0].is_ok());
    assert!(uncovered(), "the create is not synced yet");

    let claimed = claim_one(store, 1).await;
    assert!(uncovered(), "a claim syncs nothing");
    store
        .apply_writes(&[WriteOp::FinishRun {
            task_id: claimed.task.id,
            run_id: claimed.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, 2),
            claimed_version: None,
        }])
        .await
        .expect("end the run");
    assert!(!uncovered(), "covered by the run's end");

    store
        .create_tasks_deferred(vec![new_task("again")], t(3))
        .await
        .expect("create");
    assert!(uncovered());
    store.sync_deferred().await.expect("sync");
    assert!(!uncovered(), "covered by the sync");
    store
        .sync_deferred()
        .await
        .expect("a sync with nothing to do");

    store
        .create_tasks_deferred(vec![new_task("third")], t(4))
        .await
        .expect("create");
    store
        .create_tasks(vec![new_task("synced")], t(4))
        .await
        .expect("create");
    assert!(!uncovered(), "covered by the synced create");

    let mut sealed = new_task("sealed");
    sealed.secrets = vec![SealedSecret {
        name: "key".into(),
        nonce: vec![1],
        ciphertext: vec![2],
    }];
    store
        .create_tasks_deferred(vec![sealed], t(5))
        .await
        .expect("create");
    assert!(!uncovered(), "a create with a secret is synced");
}
