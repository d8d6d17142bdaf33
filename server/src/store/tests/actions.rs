//! What users do to tasks besides editing them: run now, retry, cancel,
//! clean up, count.

use super::*;

pub(crate) async fn run_now_from_finished(store: &dyn Store) {
    let task = create(store, new_task("again"), 0).await;
    let first = claim_one(store, 1).await;
    assert_eq!(first.trigger, RunTrigger::Schedule);
    match store.run_task_now(task.id, None, t(2)).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("running"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut end = run_end(RunStatus::Failed, TaskStatus::Failed, 3);
    end.attempts = 3;
    store
        .finish_run(task.id, first.run_id, &end)
        .await
        .expect("finish");

    let due = store
        .run_task_now(task.id, None, t(10))
        .await
        .expect("run now");
    assert_eq!(
        (due.status, due.next_run_at, due.attempts),
        (TaskStatus::Scheduled, Some(t(10)), 0)
    );
    let second = claim_one(store, 10).await;
    assert_eq!(second.trigger, RunTrigger::Manual);
    assert_eq!(second.attempt, 1);
    assert_eq!(statuses(&second), [StepRunStatus::Pending]);
    complete(store, &second, 11).await;
    // The manual trigger is consumed: a later scheduled run is a schedule run.
    store
        .update_task(
            task.id,
            &TaskPatch {
                disabled: Some(true),
                ..Default::default()
            },
            t(12),
        )
        .await
        .expect("off");
    store
        .update_task(
            task.id,
            &TaskPatch {
                disabled: Some(false),
                ..Default::default()
            },
            t(13),
        )
        .await
        .expect("on");
    assert_eq!(claim_one(store, 13).await.trigger, RunTrigger::Schedule);
    assert!(matches!(
        store.run_task_now(task.id + 1000, None, t(14)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn run_now_single_step(store: &dyn Store) {
    let task = create(
        store,
        with_steps(new_task("steps"), &["s/a", "s/b", "s/c"]),
        0,
    )
    .await;
    let other = create(store, new_task("other"), 0).await;
    let b = task.steps[1].id;
    store
        .update_task(
            task.id,
            &TaskPatch {
                disabled: Some(true),
                ..Default::default()
            },
            t(1),
        )
        .await
        .expect("off");

    let due = store
        .run_task_now(task.id, Some(b), t(5))
        .await
        .expect("run one step");
    assert_eq!(
        due.status,
        TaskStatus::Scheduled,
        "run now works from disabled too"
    );
    let mut claimed = claim(store, 5, 10).await;
    claimed.retain(|c| c.task.id == task.id);
    let claimed = claimed.remove(0);
    assert_eq!(claimed.trigger, RunTrigger::Step);
    assert_eq!(
        statuses(&claimed),
        [
            StepRunStatus::Skipped,
            StepRunStatus::Pending,
            StepRunStatus::Skipped
        ]
    );
    complete(store, &claimed, 6).await;
    let runs = store.list_runs(task.id, 1).await.expect("runs");
    let recorded: Vec<StepRunStatus> = runs[0].steps.iter().map(|s| s.status).collect();
    assert_eq!(
        recorded,
        [
            StepRunStatus::Skipped,
            StepRunStatus::Completed,
            StepRunStatus::Skipped
        ]
    );

    let foreign = other.steps[0].id;
    assert!(matches!(
        store.run_task_now(task.id, Some(foreign), t(7)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.run_task_now(task.id, Some(b + 1000), t(7)).await,
        Err(StoreError::NotFound(_))
    ));
    let patch = TaskPatch {
        step_status: vec![(b, StepStatus::Disabled)],
        ..Default::default()
    };
    store
        .update_task(task.id, &patch, t(8))
        .await
        .expect("disable step");
    match store.run_task_now(task.id, Some(b), t(9)).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("disabled"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub(crate) async fn retry_resumes_last_run(store: &dyn Store) {
    let task = create(store, with_steps(new_task("flaky"), &["r/a", "r/b"]), 0).await;
    match store.retry_task(task.id, t(1)).await {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("nothing to retry"), "{message}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let first = claim_one(store, 1).await;
    assert!(matches!(
        store.retry_task(task.id, t(2)).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .finish_step(
            first.steps[0].step_run_id,
            &step_end(StepRunStatus::Completed, 2),
        )
        .await
        .expect("a");
    store
        .finish_step(
            first.steps[1].step_run_id,
            &step_end(StepRunStatus::Failed, 3),
        )
        .await
        .expect("b");
    store
        .save_checkpoint(task.id, first.steps[1].step.id, b"half", t(3))
        .await
        .expect("checkpoint");
    let mut end = run_end(RunStatus::Failed, TaskStatus::Failed, 4);
    end.attempts = 3;
    store
        .finish_run(task.id, first.run_id, &end)
        .await
        .expect("finish");

    let due = store.retry_task(task.id, t(10)).await.expect("retry");
    assert_eq!(
        (due.status, due.next_run_at, due.attempts),
        (TaskStatus::Scheduled, Some(t(10)), 3),
        "a retry continues the attempt count (the step sees attempt 4)"
    );
    let retry = claim_one(store, 10).await;
    assert_eq!(retry.trigger, RunTrigger::Retry);
    assert_eq!(retry.attempt, 4);
    assert_eq!(
        statuses(&retry),
        [StepRunStatus::Reused, StepRunStatus::Pending]
    );
    let checkpoint = store
        .load_checkpoint(task.id, first.steps[1].step.id)
        .await
        .expect("load");
    assert_eq!(
        checkpoint.as_deref(),
        Some(&b"half"[..]),
        "a retry keeps checkpoints"
    );
}

pub(crate) async fn cancel_scheduled_is_immediate(store: &dyn Store) {
    let mut new = new_task("recurring");
    new.run_interval = 60;
    let task = create(store, new, 0).await;
    assert!(store.request_cancel(task.id, t(1)).await.expect("cancel"));
    let cancelled = get(store, task.id).await;
    assert_eq!(
        (cancelled.status, cancelled.next_run_at),
        (TaskStatus::Cancelled, None)
    );
    assert_eq!(cancelled.updated_at, t(1));
    assert!(claim(store, 100, 10).await.is_empty());
    assert!(matches!(
        store.request_cancel(task.id + 1000, t(2)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn cancel_running_sets_flag(store: &dyn Store) {
    let task = create(store, new_task("long"), 0).await;
    let claimed = claim_one(store, 1).await;
    assert!(!store.cancel_requested(claimed.run_id).await.expect("flag"));
    assert!(
        !store.request_cancel(task.id, t(2)).await.expect("cancel"),
        "running: the executor stops it"
    );
    assert!(store.cancel_requested(claimed.run_id).await.expect("flag"));
    assert_eq!(get(store, task.id).await.status, TaskStatus::Running);
    assert_eq!(
        store
            .heartbeat(NODE, &[claimed.run_id], t(60))
            .await
            .expect("heartbeat"),
        [claimed.run_id],
        "the heartbeat tells the node which of its runs to cancel"
    );

    let end = run_end(RunStatus::Cancelled, TaskStatus::Cancelled, 3);
    assert!(
        store
            .finish_run(task.id, claimed.run_id, &end)
            .await
            .expect("finish")
    );
    assert!(
        !store.cancel_requested(claimed.run_id).await.expect("flag"),
        "cleared with the run"
    );
    let done = get(store, task.id).await;
    assert_eq!(
        (done.status, done.last_result),
        (TaskStatus::Cancelled, Some(RunResult::Interrupted))
    );

    // A fresh run does not inherit an old request.
    store
        .run_task_now(task.id, None, t(4))
        .await
        .expect("run now");
    let next = claim_one(store, 4).await;
    assert!(!store.cancel_requested(next.run_id).await.expect("flag"));
    assert!(matches!(
        store.cancel_requested(next.run_id + 1000).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn delete_finished_tasks_by_age_and_status(store: &dyn Store) {
    let old_done = create(store, new_task("old done"), 0).await;
    let old_failed = create(store, new_task("old failed"), 0).await;
    let claimed = claim(store, 1, 10).await;
    for c in &claimed {
        let failed = c.task.id == old_failed.id;
        let (run, task) = if failed {
            (RunStatus::Failed, TaskStatus::Failed)
        } else {
            (RunStatus::Completed, TaskStatus::Completed)
        };
        assert!(
            store
                .finish_run(c.task.id, c.run_id, &run_end(run, task, 2))
                .await
                .expect("finish")
        );
    }
    let old_cancelled = create(store, new_task("old cancelled"), 0).await;
    store
        .request_cancel(old_cancelled.id, t(3))
        .await
        .expect("cancel");
    let waiting = create(store, new_task("waiting"), 0).await;
    let mut off = new_task("off");
    off.disabled = true;
    let off = create(store, off, 0).await;
    let recent = create(store, new_task("recent"), 50).await;
    store
        .request_cancel(recent.id, t(100))
        .await
        .expect("cancel");

    assert!(matches!(
        store
            .delete_finished_tasks(t(1000), Some(TaskStatus::Running))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let failed_only = store
        .delete_finished_tasks(t(50), Some(TaskStatus::Failed))
        .await
        .expect("delete");
    assert_eq!(failed_only, 1);
    assert!(store.get_task(old_failed.id).await.expect("get").is_none());
    let deleted = store
        .delete_finished_tasks(t(50), None)
        .await
        .expect("delete");
    assert_eq!(deleted, 2, "old completed and old cancelled");
    for id in [old_done.id, old_cancelled.id] {
        assert!(store.get_task(id).await.expect("get").is_none());
    }
    for id in [waiting.id, off.id, recent.id] {
        assert!(store.get_task(id).await.expect("get").is_some());
    }
    let disabled = store
        .delete_finished_tasks(t(50), Some(TaskStatus::Disabled))
        .await
        .expect("delete");
    assert_eq!(disabled, 1);
}

pub(crate) async fn count_by_status_lists_every_status(store: &dyn Store) {
    let empty = store.count_by_status().await.expect("counts");
    assert_eq!(
        empty,
        TaskStatus::ALL.iter().map(|s| (*s, 0)).collect::<Vec<_>>()
    );
    for i in 0..3 {
        create(store, new_task(&format!("t{i}")), 0).await;
    }
    let mut off = new_task("off");
    off.disabled = true;
    create(store, off, 0).await;
    claim_one(store, 1).await;
    let counts = store.count_by_status().await.expect("counts");
    assert_eq!(counts.len(), TaskStatus::ALL.len());
    let count = |status| counts.iter().find(|(s, _)| *s == status).map(|(_, n)| *n);
    assert_eq!(count(TaskStatus::Scheduled), Some(2));
    assert_eq!(count(TaskStatus::Running), Some(1));
    assert_eq!(count(TaskStatus::Disabled), Some(1));
    assert_eq!(count(TaskStatus::Completed), Some(0));
}

pub(crate) async fn make_scheduled_due_brings_forward_only_scheduled_tasks(store: &dyn Store) {
    let busy = create(store, new_task("busy"), 0).await;
    assert_eq!(claim_one(store, 0).await.task.id, busy.id, "busy runs");
    let due = create(store, new_task("due already"), 1).await;
    let mut later = new_task("later");
    later.start_at = Some(t(500));
    let later = create(store, later, 1).await;
    let mut off = new_task("off");
    off.disabled = true;
    let off = create(store, off, 1).await;

    assert_eq!(store.make_scheduled_due(t(10)).await.expect("due"), 2);
    assert_eq!(
        get(store, due.id).await.next_run_at,
        Some(t(1)),
        "a due task keeps its place in the queue"
    );
    let brought = get(store, later.id).await;
    assert_eq!(
        (brought.next_run_at, brought.updated_at),
        (Some(t(10)), t(10))
    );
    assert_eq!(get(store, off.id).await.status, TaskStatus::Disabled);
    assert_eq!(get(store, busy.id).await.status, TaskStatus::Running);

    let claimed: Vec<i64> = claim(store, 10, 10)
        .await
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(claimed, [due.id, later.id], "oldest due first");
    assert_eq!(store.make_scheduled_due(t(11)).await.expect("due"), 0);
}
