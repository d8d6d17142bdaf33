//! Completion hooks: a task's `hook_url`, the delivery a run end queues in
//! its own transaction, and the deliveries' queue (claims, tries, retries).

use super::*;
use std::sync::Arc;

const URL: &str = "http://127.0.0.1:9/done";

fn hooked(name: &str) -> NewTask {
    NewTask {
        hook_url: Some(URL.to_string()),
        ..new_task(name)
    }
}

/// Claim and complete the task's due run at `at`.
async fn run_to_end(store: &dyn Store, at: i64) -> ClaimedRun {
    let claimed = claim_one(store, at).await;
    complete(store, &claimed, at + 1).await;
    claimed
}

async fn deliveries(store: &dyn Store, task_id: i64, run_ids: &[i64]) -> Vec<HookDelivery> {
    store
        .list_hook_deliveries(task_id, run_ids)
        .await
        .expect("list deliveries")
}

fn attempt(number: i64, at: i64, status_code: Option<i64>) -> HookAttempt {
    HookAttempt {
        attempt: number,
        node: NODE.to_string(),
        started_at: t(at),
        duration_ms: 12,
        status_code,
        error: (status_code != Some(200)).then(|| "the receiver answered 500".to_string()),
    }
}

async fn claim_hooks(store: &dyn Store, now: i64) -> Vec<DueHook> {
    store
        .claim_hooks(NODE, t(now), t(now + 40), 10)
        .await
        .expect("claim hooks")
}

pub(crate) async fn hook_url_is_kept_patched_and_replaced(store: &dyn Store) {
    let task = create(store, hooked("with hook"), 0).await;
    assert_eq!(task.hook_url.as_deref(), Some(URL));
    assert_eq!(get(store, task.id).await.hook_url.as_deref(), Some(URL));
    let batch = store
        .create_tasks(vec![hooked("batched"), new_task("plain")], t(0))
        .await
        .expect("batch");
    let batched: Vec<Task> = batch.into_iter().map(|r| r.expect("created").0).collect();
    assert_eq!(
        get(store, batched[0].id).await.hook_url.as_deref(),
        Some(URL)
    );
    assert_eq!(get(store, batched[1].id).await.hook_url, None);

    let other = "http://localhost:8/other";
    let patch = |hook_url| TaskPatch {
        hook_url,
        ..TaskPatch::default()
    };
    let patched = store
        .update_task(task.id, &patch(Some(Some(other.to_string()))), t(1))
        .await
        .expect("patch");
    assert_eq!(patched.hook_url.as_deref(), Some(other));
    let untouched = store
        .update_task(task.id, &patch(None), t(2))
        .await
        .expect("patch nothing");
    assert_eq!(untouched.hook_url.as_deref(), Some(other));
    let removed = store
        .update_task(task.id, &patch(Some(None)), t(3))
        .await
        .expect("remove");
    assert_eq!(removed.hook_url, None);

    let coded = create(
        store,
        NewTask {
            code: Some("hooked-code".into()),
            ..hooked("by code")
        },
        4,
    )
    .await;
    let replaced = create(
        store,
        NewTask {
            code: Some("hooked-code".into()),
            ..new_task("by code, again")
        },
        5,
    )
    .await;
    assert_eq!(replaced.id, coded.id);
    assert_eq!(
        replaced.hook_url, None,
        "a replace sets the hook like the rest"
    );
}

pub(crate) async fn a_run_end_queues_one_delivery(store: &dyn Store) {
    let task = create(store, hooked("hooked"), 0).await;
    let plain = create(store, new_task("plain"), 0).await;
    let claimed = run_to_end(store, 1).await;
    let other = run_to_end(store, 3).await;
    let (hooked_run, plain_run) = if claimed.task.id == task.id {
        (claimed, other)
    } else {
        (other, claimed)
    };
    let queued = deliveries(store, task.id, &[hooked_run.run_id]).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let delivery = &queued[0];
    assert_eq!(
        (delivery.task_id, delivery.run_id, delivery.url.as_str()),
        (task.id, hooked_run.run_id, URL)
    );
    assert_eq!(delivery.status, HookStatus::Pending);
    assert_eq!(delivery.attempts, 0);
    let ended = hooked_run_end(store, task.id).await;
    assert_eq!(
        delivery.next_attempt_at,
        Some(ended),
        "due when the run ended"
    );
    assert!(delivery.attempt_log.is_empty());
    assert!(
        deliveries(store, plain.id, &[plain_run.run_id])
            .await
            .is_empty(),
        "a task without a hook queues nothing"
    );
    // A run end that does not apply (the run already ended) queues nothing more.
    let late = run_end(RunStatus::Failed, TaskStatus::Failed, 9);
    assert!(
        !store
            .finish_run(task.id, hooked_run.run_id, &late)
            .await
            .expect("late end")
    );
    assert_eq!(
        deliveries(store, task.id, &[hooked_run.run_id]).await.len(),
        1
    );

    // Run ends in one batch: one delivery per hooked run end.
    create(store, hooked("batch a"), 10).await;
    create(store, hooked("batch b"), 10).await;
    let runs = claim(store, 11, 2).await;
    assert_eq!(runs.len(), 2);
    let ops: Vec<WriteOp> = runs
        .iter()
        .map(|run| WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Failed, TaskStatus::Failed, 12),
            claimed_version: None,
        })
        .collect();
    assert_eq!(store.apply_writes(&ops).await.expect("batch"), [true, true]);
    for run in &runs {
        let queued = deliveries(store, run.task.id, &[run.run_id]).await;
        assert_eq!(queued.len(), 1, "task {}", run.task.id);
        assert_eq!(queued[0].next_attempt_at, Some(t(12)));
    }
}

/// When the task's last run ended.
async fn hooked_run_end(store: &dyn Store, task_id: i64) -> DateTime<Utc> {
    store.list_runs(task_id, 1).await.expect("runs")[0]
        .finished_at
        .expect("ended")
}

pub(crate) async fn deliveries_are_claimed_tried_and_delivered(store: &dyn Store) {
    let task = create(
        store,
        NewTask {
            code: Some("shop-export".into()),
            ..hooked("export")
        },
        0,
    )
    .await;
    let run = run_to_end(store, 1).await;
    assert!(
        claim_hooks(store, 1).await.is_empty(),
        "not due before the run ended"
    );
    let due = claim_hooks(store, 2).await;
    assert_eq!(due.len(), 1);
    let hook = &due[0];
    assert_eq!((hook.attempt, hook.round_attempt), (1, 1));
    assert_eq!(
        (
            hook.task_id,
            hook.task_name.as_str(),
            hook.task_code.as_deref()
        ),
        (task.id, "export", Some("shop-export"))
    );
    assert_eq!(hook.url, URL);
    assert_eq!(
        (hook.run.id, hook.run.status),
        (run.run_id, RunStatus::Completed)
    );
    assert_eq!(hook.run.finished_at, Some(t(2)));
    assert!(claim_hooks(store, 3).await.is_empty(), "held by the claim");

    // The claimer died: the claim runs out and another try is claimed.
    let again = claim_hooks(store, 43).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    let id = again[0].delivery_id;
    // The dead claimer's late record is kept as a try but moves nothing.
    assert!(
        !store
            .record_hook_attempt(id, &attempt(1, 2, None), HookNext::Delivered, t(44))
            .await
            .expect("late record")
    );
    assert!(
        store
            .record_hook_attempt(
                id,
                &attempt(2, 43, Some(500)),
                HookNext::RetryAt(t(60)),
                t(44)
            )
            .await
            .expect("record")
    );
    let pending = &deliveries(store, task.id, &[run.run_id]).await[0];
    assert_eq!(pending.status, HookStatus::Pending);
    assert_eq!(pending.next_attempt_at, Some(t(60)));
    assert!(
        claim_hooks(store, 59).await.is_empty(),
        "waits for its retry"
    );
    let third = claim_hooks(store, 60).await;
    assert_eq!((third[0].attempt, third[0].round_attempt), (3, 3));
    assert!(
        store
            .record_hook_attempt(id, &attempt(3, 60, Some(200)), HookNext::Delivered, t(61))
            .await
            .expect("delivered")
    );
    let delivered = &deliveries(store, task.id, &[run.run_id]).await[0];
    assert_eq!(delivered.status, HookStatus::Delivered);
    assert_eq!(delivered.attempts, 3);
    assert_eq!(delivered.next_attempt_at, None);
    assert_eq!(delivered.finished_at, Some(t(61)));
    let log: Vec<(i64, Option<i64>)> = delivered
        .attempt_log
        .iter()
        .map(|a| (a.attempt, a.status_code))
        .collect();
    assert_eq!(log, [(1, None), (2, Some(500)), (3, Some(200))]);
    assert_eq!(delivered.attempt_log[2].error, None);
    assert_eq!(delivered.attempt_log[2].node, NODE);
    assert_eq!(delivered.attempt_log[2].duration_ms, 12);
    assert!(
        claim_hooks(store, 1000).await.is_empty(),
        "delivered is final"
    );
}

pub(crate) async fn a_failed_delivery_is_retried_by_hand(store: &dyn Store) {
    let task = create(store, hooked("failing"), 0).await;
    let other = create(
        store,
        NewTask {
            disabled: true,
            ..new_task("not it")
        },
        0,
    )
    .await;
    let run = run_to_end(store, 1).await;
    let due = claim_hooks(store, 10).await;
    let id = due[0].delivery_id;
    let retry = |task_id, at| store.retry_hook_delivery(task_id, id, t(at));
    assert!(
        matches!(retry(task.id, 11).await, Err(StoreError::Conflict(_))),
        "pending: it is retried by itself"
    );
    assert!(
        store
            .record_hook_attempt(id, &attempt(1, 10, None), HookNext::GiveUp, t(11))
            .await
            .expect("give up")
    );
    let failed = &deliveries(store, task.id, &[run.run_id]).await[0];
    assert_eq!(failed.status, HookStatus::Failed);
    assert_eq!(failed.finished_at, Some(t(11)));
    assert!(claim_hooks(store, 1000).await.is_empty(), "failed is final");

    assert!(matches!(
        retry(other.id, 12).await,
        Err(StoreError::NotFound(_))
    ));
    let retried = retry(task.id, 12).await.expect("retry");
    assert_eq!(retried.status, HookStatus::Pending);
    assert_eq!(retried.next_attempt_at, Some(t(12)));
    assert_eq!(retried.finished_at, None);
    assert_eq!(retried.attempt_log.len(), 1, "the tries before are kept");
    let due = claim_hooks(store, 12).await;
    assert_eq!(
        (due[0].attempt, due[0].round_attempt),
        (2, 1),
        "a full set of tries again"
    );
}

pub(crate) async fn concurrent_hook_claims_never_overlap(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..12 {
        tasks.push(create(store.as_ref(), hooked(&format!("hooked {i}")), 0).await);
    }
    let runs = claim(store.as_ref(), 1, 12).await;
    let ops: Vec<WriteOp> = runs
        .iter()
        .map(|run| WriteOp::FinishRun {
            task_id: run.task.id,
            run_id: run.run_id,
            end: run_end(RunStatus::Completed, TaskStatus::Completed, 2),
            claimed_version: None,
        })
        .collect();
    store.apply_writes(&ops).await.expect("end runs");
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_hooks(&format!("node-{i}"), t(3), t(40), 4)
                    .await
                    .expect("claim")
            })
        })
        .collect();
    let mut seen = Vec::new();
    for claimer in claimers {
        seen.extend(
            claimer
                .await
                .expect("join")
                .into_iter()
                .map(|h| h.delivery_id),
        );
    }
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), count, "a delivery claimed twice");
    assert_eq!(count, 12, "all claimed");
}

pub(crate) async fn prune_keeps_a_run_until_its_hook_is_delivered(store: &dyn Store) {
    let task = create(store, hooked("pruned"), 0).await;
    let first = run_to_end(store, 1).await;
    store
        .run_task_now(task.id, None, t(3))
        .await
        .expect("run again");
    run_to_end(store, 4).await;
    // Both runs' deliveries are pending: the older run is past the age
    // but stays, or its delivery would go with it.
    store.prune(t(100)).await.expect("prune");
    assert_eq!(deliveries(store, task.id, &[first.run_id]).await.len(), 1);
    assert_eq!(store.list_runs(task.id, 10).await.expect("runs").len(), 2);

    for due in claim_hooks(store, 10).await {
        store
            .record_hook_attempt(
                due.delivery_id,
                &attempt(1, 10, Some(200)),
                HookNext::Delivered,
                t(10),
            )
            .await
            .expect("delivered");
    }
    store.prune(t(100)).await.expect("prune");
    let runs = store.list_runs(task.id, 10).await.expect("runs");
    assert_eq!(runs.len(), 1, "delivered, the old run goes: {runs:?}");
    assert_ne!(runs[0].id, first.run_id);
}
