//! Step runs, the end of runs, retries and run history.

use super::*;
use std::sync::Arc;

pub(crate) async fn finish_run_applies_once(store: &dyn Store) {
    let task = create(
        store,
        with_steps(new_task("guarded"), &["g/a", "g/b", "g/c"]),
        0,
    )
    .await;
    let claimed = claim_one(store, 1).await;
    let [a, b, c] = [0, 1, 2].map(|i| claimed.steps[i].step_run_id);
    store
        .start_step(a, Some("hash-a"), t(2))
        .await
        .expect("start a");
    assert!(
        store
            .finish_step(a, &step_end(StepRunStatus::Completed, 3))
            .await
            .expect("finish a")
    );
    store
        .start_step(b, Some("hash-b"), t(3))
        .await
        .expect("start b");

    let wrong_run = run_end(RunStatus::Completed, TaskStatus::Completed, 4);
    assert!(
        !store
            .finish_run(task.id, claimed.run_id + 1000, &wrong_run)
            .await
            .expect("wrong run")
    );
    assert!(
        !store
            .finish_run(task.id + 1000, claimed.run_id, &wrong_run)
            .await
            .expect("wrong task")
    );

    let mut end = run_end(RunStatus::Interrupted, TaskStatus::Scheduled, 5);
    end.message = Some("node lost".into());
    end.next_run_at = Some(t(65));
    end.attempts = 1;
    end.progress = 33.0;
    assert!(
        store
            .finish_run(task.id, claimed.run_id, &end)
            .await
            .expect("finish")
    );
    let again = run_end(RunStatus::Completed, TaskStatus::Completed, 6);
    assert!(
        !store
            .finish_run(task.id, claimed.run_id, &again)
            .await
            .expect("second finish"),
        "applies once"
    );

    let done = get(store, task.id).await;
    assert_eq!(done.status, TaskStatus::Scheduled);
    assert_eq!(done.last_result, Some(RunResult::Interrupted));
    assert_eq!(done.next_run_at, Some(t(65)));
    assert_eq!(done.attempts, 1);
    assert_eq!(done.progress, 33.0);
    assert_eq!(done.message.as_deref(), Some("node lost"));
    assert_eq!(done.current_run_id, None);
    assert_eq!(done.updated_at, t(5));

    let run = store.list_runs(task.id, 1).await.expect("runs").remove(0);
    assert_eq!(
        (run.status, run.finished_at),
        (RunStatus::Interrupted, Some(t(5)))
    );
    assert_eq!(run.message.as_deref(), Some("node lost"));
    let by_id = |id: i64| {
        run.steps
            .iter()
            .find(|s| s.id == id)
            .expect("step run")
            .clone()
    };
    assert_eq!(by_id(a).status, StepRunStatus::Completed);
    let interrupted = by_id(b);
    assert_eq!(interrupted.status, StepRunStatus::Interrupted);
    assert_eq!(
        interrupted.error.as_deref(),
        Some("interrupted: the run ended")
    );
    assert_eq!(
        (interrupted.started_at, interrupted.finished_at),
        (Some(t(3)), Some(t(5)))
    );
    assert_eq!(interrupted.module_hash.as_deref(), Some("hash-b"));
    assert_eq!(by_id(c).status, StepRunStatus::Skipped);
    assert_eq!(by_id(c).error, None);
    assert!(
        store
            .expired_runs(t(1000), None)
            .await
            .expect("expired")
            .is_empty(),
        "lease cleared"
    );
}

pub(crate) async fn recurring_task_returns_to_scheduled(store: &dyn Store) {
    let mut new = new_task("every minute");
    new.run_interval = 60;
    let task = create(store, new, 0).await;
    for round in 0..3 {
        let start = round * 60;
        let claimed = claim_one(store, start).await;
        assert_eq!(claimed.trigger, RunTrigger::Schedule);
        assert_eq!(claimed.attempt, 1);
        let mut end = run_end(RunStatus::Completed, TaskStatus::Scheduled, start + 1);
        end.next_run_at = Some(t(start + 60));
        assert!(
            store
                .finish_run(task.id, claimed.run_id, &end)
                .await
                .expect("finish")
        );
        assert!(claim(store, start + 59, 10).await.is_empty());
    }
    let runs = store.list_runs(task.id, 10).await.expect("runs");
    assert_eq!(runs.len(), 3);
    assert!(runs.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}

pub(crate) async fn finish_step_never_twice(store: &dyn Store) {
    create(store, with_steps(new_task("once"), &["o/a", "o/b"]), 0).await;
    let claimed = claim_one(store, 1).await;
    let (a, b) = (claimed.steps[0].step_run_id, claimed.steps[1].step_run_id);
    store
        .start_step(a, Some("sha-a"), t(2))
        .await
        .expect("start");
    let mut end = step_end(StepRunStatus::Completed, 3);
    end.result = Some(json!({"rows": 12}));
    assert!(store.finish_step(a, &end).await.expect("finish"));
    assert!(
        !store
            .finish_step(a, &step_end(StepRunStatus::Failed, 4))
            .await
            .expect("again")
    );
    store
        .start_step(a, Some("sha-other"), t(5))
        .await
        .expect("restart is ignored");

    // A step that never started (its module is missing) can still be failed.
    let missing = step_end(StepRunStatus::Failed, 6);
    assert!(
        store
            .finish_step(b, &missing)
            .await
            .expect("fail unstarted")
    );

    let run = store
        .list_runs(claimed.task.id, 1)
        .await
        .expect("runs")
        .remove(0);
    let first = &run.steps[0];
    assert_eq!(first.status, StepRunStatus::Completed);
    assert_eq!(first.result, Some(json!({"rows": 12})));
    assert_eq!(first.outcome, Some(json!({"status": "completed"})));
    assert_eq!(first.module_hash.as_deref(), Some("sha-a"));
    assert_eq!(
        (first.started_at, first.finished_at),
        (Some(t(2)), Some(t(3)))
    );
    assert_eq!(
        (first.fuel_used, first.peak_memory, first.progress),
        (1_000, 65_536, 100.0)
    );
    assert_eq!(first.message.as_deref(), Some("completed at 3"));
    let second = &run.steps[1];
    assert_eq!(
        (second.status, second.started_at),
        (StepRunStatus::Failed, None)
    );
    assert_eq!(second.error.as_deref(), Some("step failed"));

    let mut end = run_end(RunStatus::Failed, TaskStatus::Failed, 7);
    end.attempts = 3;
    assert!(
        store
            .finish_run(claimed.task.id, claimed.run_id, &end)
            .await
            .expect("finish run")
    );
    assert!(
        !store
            .finish_step(b, &step_end(StepRunStatus::Completed, 8))
            .await
            .expect("after the run")
    );
}

pub(crate) async fn resume_reuses_completed_steps(store: &dyn Store) {
    let task = create(
        store,
        with_steps(new_task("resumable"), &["r/a", "r/b", "r/c"]),
        0,
    )
    .await;
    let steps: Vec<i64> = task.steps.iter().map(|s| s.id).collect();
    let first = claim_one(store, 1).await;
    store
        .save_checkpoint(task.id, steps[1], b"at row 500", t(2))
        .await
        .expect("checkpoint");
    let mut done = step_end(StepRunStatus::Completed, 2);
    done.result = Some(json!({"dumped": "a.sql"}));
    store
        .finish_step(first.steps[0].step_run_id, &done)
        .await
        .expect("a done");
    store
        .start_step(first.steps[1].step_run_id, Some("h"), t(2))
        .await
        .expect("b starts");
    let end = retry_end(RunStatus::Failed, 3, 10, 1);
    assert!(
        store
            .finish_run(task.id, first.run_id, &end)
            .await
            .expect("finish")
    );

    let retry = claim_one(store, 10).await;
    assert_eq!(retry.trigger, RunTrigger::Retry);
    assert_eq!(retry.attempt, 2);
    assert_eq!(
        statuses(&retry),
        [
            StepRunStatus::Reused,
            StepRunStatus::Pending,
            StepRunStatus::Pending
        ]
    );
    let checkpoint = store
        .load_checkpoint(task.id, steps[1])
        .await
        .expect("load");
    assert_eq!(
        checkpoint.as_deref(),
        Some(&b"at row 500"[..]),
        "kept for the resumed step"
    );
    let run = store.list_runs(task.id, 1).await.expect("runs").remove(0);
    assert_eq!(run.steps[0].status, StepRunStatus::Reused);
    assert_eq!(
        run.steps[0].result,
        Some(json!({"dumped": "a.sql"})),
        "the reused result is copied"
    );

    // Reused steps stay reused through a second retry.
    store
        .finish_step(
            retry.steps[1].step_run_id,
            &step_end(StepRunStatus::Completed, 11),
        )
        .await
        .expect("b");
    let end = retry_end(RunStatus::Failed, 12, 20, 2);
    assert!(
        store
            .finish_run(task.id, retry.run_id, &end)
            .await
            .expect("finish")
    );
    let third = claim_one(store, 20).await;
    assert_eq!((third.attempt, third.trigger), (3, RunTrigger::Retry));
    assert_eq!(
        statuses(&third),
        [
            StepRunStatus::Reused,
            StepRunStatus::Reused,
            StepRunStatus::Pending
        ]
    );
    let mut end = run_end(RunStatus::Failed, TaskStatus::Failed, 21);
    end.attempts = 3;
    assert!(
        store
            .finish_run(task.id, third.run_id, &end)
            .await
            .expect("finish")
    );

    // A fresh run starts over: nothing reused, checkpoints cleared.
    store
        .run_task_now(task.id, None, t(30))
        .await
        .expect("run now");
    let fresh = claim_one(store, 30).await;
    assert_eq!((fresh.attempt, fresh.trigger), (1, RunTrigger::Manual));
    assert_eq!(statuses(&fresh), [StepRunStatus::Pending; 3]);
    assert_eq!(
        store
            .load_checkpoint(task.id, steps[1])
            .await
            .expect("load"),
        None
    );
}

pub(crate) async fn rescued_run_is_retried_with_reuse(store: &dyn Store) {
    let task = create(store, with_steps(new_task("rescued"), &["x/a", "x/b"]), 0).await;
    let lost = claim_one(store, 0).await;
    store
        .finish_step(
            lost.steps[0].step_run_id,
            &step_end(StepRunStatus::Completed, 1),
        )
        .await
        .expect("a");
    store
        .start_step(lost.steps[1].step_run_id, None, t(1))
        .await
        .expect("b");

    let (expired, run_id) = store
        .expired_runs(t(31), None)
        .await
        .expect("expired")
        .remove(0);
    assert_eq!((expired.id, run_id), (task.id, lost.run_id));
    let end = retry_end(RunStatus::Interrupted, 31, 31, expired.attempts);
    assert!(
        store
            .finish_run(task.id, run_id, &end)
            .await
            .expect("rescue")
    );

    // The lost executor comes back: it can neither end the run nor record the step.
    let late = run_end(RunStatus::Completed, TaskStatus::Completed, 32);
    assert!(
        !store
            .finish_run(task.id, lost.run_id, &late)
            .await
            .expect("late finish")
    );
    let late_step = step_end(StepRunStatus::Completed, 32);
    assert!(
        !store
            .finish_step(lost.steps[1].step_run_id, &late_step)
            .await
            .expect("late step")
    );

    let retry = claim_one(store, 31).await;
    assert_eq!((retry.trigger, retry.attempt), (RunTrigger::Retry, 2));
    assert_eq!(
        statuses(&retry),
        [StepRunStatus::Reused, StepRunStatus::Pending]
    );
}

pub(crate) async fn step_progress_is_saved(store: &dyn Store) {
    let task = create(store, with_steps(new_task("progress"), &["p/a", "p/b"]), 0).await;
    let claimed = claim_one(store, 1).await;
    let a = claimed.steps[0].step_run_id;
    store.start_step(a, None, t(1)).await.expect("start");
    store
        .save_step_progress(claimed.run_id, a, 40.0, 20.0, Some("dumping users"))
        .await
        .expect("progress");
    let live = get(store, task.id).await;
    assert_eq!(
        (live.progress, live.message.as_deref()),
        (20.0, Some("dumping users"))
    );
    store
        .save_step_progress(claimed.run_id, a, 60.0, 30.0, None)
        .await
        .expect("progress");
    let live = get(store, task.id).await;
    assert_eq!(
        (live.progress, live.message.as_deref()),
        (30.0, Some("dumping users")),
        "no message: kept"
    );
    let run = store.list_runs(task.id, 1).await.expect("runs").remove(0);
    assert_eq!(
        (run.steps[0].progress, run.steps[0].message.as_deref()),
        (60.0, Some("dumping users"))
    );
    assert_eq!(run.steps[1].progress, 0.0, "other steps untouched");

    complete(store, &claimed, 2).await;
    store
        .save_step_progress(claimed.run_id, a, 99.0, 99.0, Some("late"))
        .await
        .expect("late progress");
    assert_eq!(
        get(store, task.id).await.progress,
        100.0,
        "a finished run's progress is final"
    );
}

pub(crate) async fn list_runs_and_durations(store: &dyn Store) {
    let mut new = new_task("timed");
    new.run_interval = 100;
    let task = create(store, new, 0).await;
    let mut run_ids = Vec::new();
    let mut known_at_claim = Vec::new();
    for (start, seconds, status) in [
        (0, 3, RunStatus::Completed),
        (100, 7, RunStatus::Failed),
        (200, 5, RunStatus::Completed),
    ] {
        let claimed = claim_one(store, start).await;
        known_at_claim.push(claimed.past_durations.clone());
        run_ids.push(claimed.run_id);
        let mut end = run_end(status, TaskStatus::Scheduled, start + seconds);
        end.next_run_at = Some(t(start + 100));
        assert!(
            store
                .finish_run(task.id, claimed.run_id, &end)
                .await
                .expect("finish")
        );
    }
    assert_eq!(
        known_at_claim,
        [vec![], vec![3.0], vec![3.0]],
        "a claim carries the completed runs' durations"
    );
    let runs = store.list_runs(task.id, 2).await.expect("runs");
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    assert_eq!(ids, [run_ids[2], run_ids[1]], "newest first, limited");
    assert!(
        runs.iter()
            .all(|r| r.steps.len() == 1 && r.task_id == task.id)
    );
    let durations = store
        .recent_run_durations(task.id, 5)
        .await
        .expect("durations");
    assert_eq!(durations, [5.0, 3.0], "completed runs only, newest first");
    assert_eq!(
        store
            .recent_run_durations(task.id, 1)
            .await
            .expect("durations"),
        [5.0]
    );
    assert!(
        store
            .list_runs(task.id + 1000, 5)
            .await
            .expect("runs")
            .is_empty()
    );
}

/// A batch of writes over several runs gives what the single writes would,
/// op by op — including a run rescued before its batch arrived.
pub(crate) async fn batched_writes_match_single_writes(store: &dyn Store) {
    for name in ["ok", "failing", "rescued"] {
        create(store, with_steps(new_task(name), &["m/a", "m/b"]), 0).await;
    }
    let claimed = claim(store, 1, 10).await;
    let [ok, failing, rescued] = &claimed[..] else {
        panic!("three claims expected");
    };
    let rescue = run_end(RunStatus::Interrupted, TaskStatus::Failed, 2);
    assert!(
        store
            .finish_run(rescued.task.id, rescued.run_id, &rescue)
            .await
            .expect("rescue")
    );
    let start = |planned: &PlannedStep| WriteOp::StartStep {
        step_run_id: planned.step_run_id,
        module_hash: Some("h".into()),
        at: t(3),
    };
    let end_step = |planned: &PlannedStep, status| WriteOp::FinishStep {
        step_run_id: planned.step_run_id,
        end: step_end(status, 4),
    };
    let end_run = |c: &ClaimedRun, run, task| WriteOp::FinishRun {
        task_id: c.task.id,
        run_id: c.run_id,
        end: run_end(run, task, 5),
        claimed_version: None,
    };
    let ops = vec![
        start(&ok.steps[0]),
        start(&failing.steps[0]),
        start(&rescued.steps[0]),
        end_step(&ok.steps[0], StepRunStatus::Completed),
        end_step(&failing.steps[0], StepRunStatus::Failed),
        end_step(&rescued.steps[0], StepRunStatus::Completed),
        start(&ok.steps[1]),
        end_step(&ok.steps[1], StepRunStatus::Completed),
        end_run(failing, RunStatus::Failed, TaskStatus::Failed),
        end_run(ok, RunStatus::Completed, TaskStatus::Completed),
        end_run(rescued, RunStatus::Completed, TaskStatus::Completed),
    ];
    let applied = store.apply_writes(&ops).await.expect("batch");
    assert_eq!(
        applied,
        [
            true, true, true, true, true, false, true, true, true, true, false
        ],
        "a rescued run's step and run ends do not apply"
    );

    let step_statuses =
        |runs: Vec<Run>| -> Vec<StepRunStatus> { runs[0].steps.iter().map(|s| s.status).collect() };
    let runs = store.list_runs(ok.task.id, 1).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_eq!(runs[0].steps[1].module_hash.as_deref(), Some("h"));
    assert_eq!(runs[0].steps[1].started_at, Some(t(3)));
    assert_eq!(
        step_statuses(runs),
        [StepRunStatus::Completed, StepRunStatus::Completed]
    );
    assert_eq!(get(store, ok.task.id).await.status, TaskStatus::Completed);

    let runs = store.list_runs(failing.task.id, 1).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(
        step_statuses(runs),
        [StepRunStatus::Failed, StepRunStatus::Skipped],
        "the step never started is skipped when the run ends"
    );

    let runs = store.list_runs(rescued.task.id, 1).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Interrupted, "the rescue stands");
    assert_eq!(
        step_statuses(runs),
        [StepRunStatus::Skipped, StepRunStatus::Skipped]
    );
    assert_eq!(get(store, rescued.task.id).await.status, TaskStatus::Failed);
}

/// Progress in a batch ends where applying it op by op would: each step
/// run and its task keep the last value, and the last message given (a
/// progress without a message keeps the one before).
pub(crate) async fn batched_progress_keeps_the_last_value_and_message(store: &dyn Store) {
    create(
        store,
        with_steps(new_task("progressing"), &["m/a", "m/b"]),
        0,
    )
    .await;
    let claimed = claim(store, 1, 10).await;
    let run = &claimed[0];
    let progress = |step: usize, step_progress: f64, task_progress: f64, message: Option<&str>| {
        WriteOp::SaveProgress {
            run_id: run.run_id,
            step_run_id: run.steps[step].step_run_id,
            step_progress,
            task_progress,
            message: message.map(str::to_string),
        }
    };
    let ops = vec![
        WriteOp::StartStep {
            step_run_id: run.steps[0].step_run_id,
            module_hash: Some("h".into()),
            at: t(2),
        },
        progress(0, 10.0, 5.0, Some("first")),
        progress(0, 40.0, 20.0, Some("second")),
        progress(0, 60.0, 30.0, None),
    ];
    let applied = store.apply_writes(&ops).await.expect("batch");
    assert_eq!(applied, [true, true, true, true]);
    let task = get(store, run.task.id).await;
    assert_eq!(
        (task.progress, task.message.as_deref()),
        (30.0, Some("second"))
    );
    let runs = store.list_runs(run.task.id, 1).await.expect("runs");
    let step = &runs[0].steps[0];
    assert_eq!(step.status, StepRunStatus::Running);
    assert_eq!(
        (step.progress, step.message.as_deref()),
        (60.0, Some("second"))
    );
    assert_eq!(runs[0].steps[1].progress, 0.0, "the other step has none");
}

/// The engine's lane: writes are applied in the order queued (a run's end
/// after its steps'), a committed write answers whether it applied, and a
/// claim takes what is due.
pub(crate) async fn the_run_writer_keeps_order_and_claims(store: Arc<dyn Store>) {
    let store_ref: &dyn Store = &*store;
    create(
        store_ref,
        with_steps(new_task("ordered"), &["w/a", "w/b"]),
        0,
    )
    .await;
    let writer = store.clone().run_writer(Claimant {
        node: NODE.to_string(),
        lease: std::time::Duration::from_secs(30),
    });
    let mut claimed = writer.claim(ClaimRoom::fixed(10)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let run = claimed.remove(0);
    for (i, planned) in run.steps.iter().enumerate() {
        let at = 2 + i64::try_from(i).expect("small");
        writer.queue(WriteOp::StartStep {
            step_run_id: planned.step_run_id,
            module_hash: Some("h".into()),
            at: t(at),
        });
        writer.queue(WriteOp::FinishStep {
            step_run_id: planned.step_run_id,
            end: step_end(StepRunStatus::Completed, at),
        });
    }
    let end = run_end(RunStatus::Completed, TaskStatus::Completed, 9);
    let finish = |end: RunEnd| WriteOp::FinishRun {
        task_id: run.task.id,
        run_id: run.run_id,
        end,
        claimed_version: None,
    };
    assert!(
        writer
            .commit(finish(end.clone()))
            .await
            .expect("end")
            .applied()
    );
    assert!(
        !writer.commit(finish(end)).await.expect("again").applied(),
        "a run ends once"
    );
    let runs = store.list_runs(run.task.id, 1).await.expect("runs");
    assert_eq!(runs[0].node, NODE);
    assert_eq!(
        runs[0].steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        [StepRunStatus::Completed, StepRunStatus::Completed],
        "the steps' ends were written before the run's"
    );
    assert!(
        writer
            .claim(ClaimRoom::fixed(10))
            .await
            .expect("claim")
            .is_empty()
    );
}

/// A run end that gives its task's claimed version (someone waits on it)
/// says whether the task was still as the claim left it. When it was, the
/// claimed task with the end applied is the stored task, field for field:
/// that is what a waited answer is handed instead of reading the task. An
/// edit while the run ran makes it a plain `Applied`, and the waiter reads.
pub(crate) async fn a_waited_run_end_says_whether_its_task_is_as_claimed(store: Arc<dyn Store>) {
    let store_ref: &dyn Store = &*store;
    let mut waited = with_steps(new_task("waited"), &["v/a", "v/b"]);
    waited.details = details(&[("shop", json!("A"))]);
    waited.secrets = vec![SealedSecret {
        name: "api_key".into(),
        nonce: vec![1],
        ciphertext: vec![2],
    }];
    let task = create(store_ref, waited, 0).await;
    let edited = create(store_ref, with_steps(new_task("edited"), &["v/c"]), 0).await;
    let writer = store.clone().run_writer(Claimant {
        node: NODE.to_string(),
        lease: std::time::Duration::from_secs(30),
    });
    let claimed = writer.claim(ClaimRoom::fixed(10)).await.expect("claim");
    let run_of = |id: i64| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .expect("both tasks claimed")
    };
    let finish = |run: &ClaimedRun, end: &RunEnd| WriteOp::FinishRun {
        task_id: run.task.id,
        run_id: run.run_id,
        end: end.clone(),
        claimed_version: Some(run.task.updated_at),
    };
    // A failed run to be retried, with times finer than the store keeps and
    // no message of its own (the stored one stays).
    let sub_ms = chrono::Duration::microseconds(123_456);
    let mut end = run_end(RunStatus::Failed, TaskStatus::Scheduled, 9);
    end.finished_at = t(9) + sub_ms;
    end.next_run_at = Some(t(70) + sub_ms);
    end.attempts = 1;
    end.resume_next = true;
    end.progress = 42.5;
    end.message = None;

    let run = run_of(task.id);
    assert_eq!(
        writer.commit(finish(run, &end)).await.expect("end"),
        WriteAnswer::AppliedToClaimed
    );
    let stored = store.get_task(task.id).await.expect("get").expect("task");
    assert_eq!(run.task.clone().after_run_end(&end), stored);

    let patch = TaskPatch {
        name: Some("renamed while it ran".into()),
        ..TaskPatch::default()
    };
    store
        .update_task(edited.id, &patch, t(5))
        .await
        .expect("edit");
    let run = run_of(edited.id);
    assert_eq!(
        writer.commit(finish(run, &end)).await.expect("end"),
        WriteAnswer::Applied,
        "the task changed since its claim"
    );
    assert_eq!(
        writer.commit(finish(run, &end)).await.expect("again"),
        WriteAnswer::Skipped
    );
}

/// A retry resumes the run it retries (its progress goes on), but not that
/// run's error: a task that then succeeds shows no error (the last message a
/// run gives is its own).
pub(crate) async fn a_retry_that_succeeds_clears_the_last_error(store: &dyn Store) {
    let task = create(store, with_steps(new_task("import"), &["i/a", "i/b"]), 0).await;
    let first = claim_one(store, 1).await;
    let mut failed = run_end(RunStatus::Failed, TaskStatus::Scheduled, 2);
    failed.message = Some("step 2 (i/b): the shop did not answer".into());
    failed.next_run_at = Some(t(10));
    failed.attempts = 1;
    failed.resume_next = true;
    failed.progress = 50.0;
    assert!(
        store
            .finish_run(task.id, first.run_id, &failed)
            .await
            .expect("fail")
    );
    let waiting = get(store, task.id).await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("step 2 (i/b): the shop did not answer"),
        "shown while the retry waits"
    );

    let retry = claim_one(store, 10).await;
    assert_eq!(retry.trigger, RunTrigger::Retry);
    assert_eq!(retry.task.message, None);
    let running = get(store, task.id).await;
    assert_eq!(
        (running.progress, running.message),
        (50.0, None),
        "progress goes on, the error does not"
    );

    let mut succeeded = run_end(RunStatus::Completed, TaskStatus::Completed, 11);
    succeeded.message = None;
    assert!(
        store
            .finish_run(task.id, retry.run_id, &succeeded)
            .await
            .expect("succeed")
    );
    let done = get(store, task.id).await;
    assert_eq!(done.last_result, Some(RunResult::Success));
    assert_eq!(done.message, None, "no error left from the failed run");
}
