//! Performance statistics and alert facts.

use super::*;

/// Start a step run at `start` and end it at `end` with `status`.
async fn step(
    store: &dyn Store,
    claimed: &ClaimedRun,
    index: usize,
    status: StepRunStatus,
    (start, end): (i64, i64),
    fuel_used: i64,
) {
    let step_run_id = claimed.steps[index].step_run_id;
    store
        .start_step(step_run_id, Some("hash"), t(start))
        .await
        .expect("start step");
    let mut ended = step_end(status, end);
    ended.fuel_used = fuel_used;
    if status != StepRunStatus::Completed {
        ended.error = Some(format!("error at {end}"));
    }
    assert!(
        store
            .finish_step(step_run_id, &ended)
            .await
            .expect("finish step")
    );
}

async fn end_run(store: &dyn Store, claimed: &ClaimedRun, status: RunStatus, at: i64) {
    let task_status = match status {
        RunStatus::Completed => TaskStatus::Completed,
        RunStatus::Cancelled => TaskStatus::Cancelled,
        _ => TaskStatus::Failed,
    };
    let applied = store
        .finish_run(
            claimed.task.id,
            claimed.run_id,
            &run_end(status, task_status, at),
        )
        .await
        .expect("finish run");
    assert!(applied);
}

/// Create a task with these steps at `at` and claim it at once.
async fn start(store: &dyn Store, controllers: &[&str], at: i64) -> ClaimedRun {
    create(store, with_steps(new_task("run"), controllers), at).await;
    claim_one(store, at).await
}

pub(crate) async fn performance_totals_modules_and_hours(store: &dyn Store) {
    // Before the window: not counted.
    let old = start(store, &["m/ok"], 0).await;
    step(store, &old, 0, StepRunStatus::Completed, (0, 20), 9_999).await;
    end_run(store, &old, RunStatus::Completed, 20).await;

    // Completed in 10 s.
    let a = start(store, &["m/ok"], 200).await;
    step(store, &a, 0, StepRunStatus::Completed, (200, 210), 1_000).await;
    end_run(store, &a, RunStatus::Completed, 210).await;
    // Failed in 20 s: m/ok completed, then m/bad failed.
    let b = start(store, &["m/ok", "m/bad"], 300).await;
    step(store, &b, 0, StepRunStatus::Completed, (300, 302), 1_000).await;
    step(store, &b, 1, StepRunStatus::Failed, (302, 320), 3_000).await;
    end_run(store, &b, RunStatus::Failed, 320).await;
    // Interrupted in 30 s, an hour later (a limit stopped m/bad).
    let c = start(store, &["m/bad"], 4_000).await;
    step(
        store,
        &c,
        0,
        StepRunStatus::Interrupted,
        (4_000, 4_030),
        5_000,
    )
    .await;
    end_run(store, &c, RunStatus::Interrupted, 4_030).await;
    // Cancelled while m/ok ran: counted, judged neither way.
    let d = start(store, &["m/ok"], 5_000).await;
    store
        .start_step(d.steps[0].step_run_id, Some("hash"), t(5_000))
        .await
        .expect("start step");
    end_run(store, &d, RunStatus::Cancelled, 5_010).await;
    // Still running; its second step never ran (pending).
    let e = start(store, &["m/ok", "m/never"], 6_000).await;
    store
        .start_step(e.steps[0].step_run_id, Some("hash"), t(6_000))
        .await
        .expect("start step");

    let stats = store.performance(t(100), t(7_000)).await.expect("stats");
    assert_eq!(
        (stats.runs, stats.completed, stats.failed),
        (5, 1, 2),
        "{stats:?}"
    );
    assert_eq!(stats.average_duration_seconds, Some(20.0));

    let modules: Vec<&str> = stats.modules.iter().map(|m| m.module.as_str()).collect();
    assert_eq!(modules, ["m/bad", "m/ok"], "pending step runs did not run");
    let bad = &stats.modules[0];
    assert_eq!((bad.runs, bad.completed, bad.failed), (2, 0, 2));
    assert_eq!(bad.average_duration_seconds, Some(24.0));
    assert_eq!(bad.average_fuel, Some(4_000.0));
    assert_eq!(bad.average_peak_memory, Some(65_536.0));
    assert_eq!(bad.last_run_at, Some(t(4_000)), "its latest start");
    let ok = &stats.modules[1];
    assert_eq!(
        (ok.runs, ok.completed, ok.failed),
        (4, 2, 0),
        "the cancelled and the running step runs count as runs only"
    );
    assert_eq!(ok.average_duration_seconds, Some(6.0));
    assert_eq!(ok.average_fuel, Some(1_000.0));
    assert_eq!(
        ok.last_run_at,
        Some(t(6_000)),
        "a running step run is the latest run"
    );

    // t(0) is 400 s past an hour: runs ending at t(210) and t(320) share
    // the hour starting at t(-400); t(4030) is in the next one.
    let hours: Vec<(DateTime<Utc>, i64, i64)> = stats
        .throughput
        .iter()
        .map(|h| (h.hour, h.completed, h.failed))
        .collect();
    assert_eq!(hours, [(t(-400), 1, 1), (t(3_200), 0, 1)]);

    let empty = store
        .performance(t(100_000), t(200_000))
        .await
        .expect("empty stats");
    assert_eq!(
        empty,
        PerformanceStats {
            runs: 0,
            completed: 0,
            failed: 0,
            rescued: 0,
            average_duration_seconds: None,
            modules: Vec::new(),
            throughput: Vec::new(),
        }
    );
}

pub(crate) async fn alert_facts_backlog_running_and_failing_modules(store: &dyn Store) {
    // Ended before the window: not counted.
    let old = start(store, &["m/bad"], 0).await;
    step(store, &old, 0, StepRunStatus::Failed, (0, 50), 1).await;
    end_run(store, &old, RunStatus::Failed, 50).await;

    // One run whose step runs end one after the other.
    let r = start(
        store,
        &[
            "m/flaky", "m/flaky", "m/flaky", "m/flaky", "m/bad", "m/bad", "m/bad", "m/bad",
            "m/bad", "m/good",
        ],
        100,
    )
    .await;
    let ends = [
        (StepRunStatus::Failed, 110), // before the window
        (StepRunStatus::Completed, 130),
        (StepRunStatus::Failed, 140),
        (StepRunStatus::Failed, 150),
        (StepRunStatus::Failed, 115), // before the window
        (StepRunStatus::Failed, 155),
        (StepRunStatus::Failed, 160),
        (StepRunStatus::Interrupted, 165), // neither counts nor breaks the streak
        (StepRunStatus::Failed, 175),
        (StepRunStatus::Completed, 180),
    ];
    for (index, (status, at)) in ends.into_iter().enumerate() {
        step(store, &r, index, status, (100, at), 1).await;
    }
    end_run(store, &r, RunStatus::Failed, 180).await;
    let s = start(store, &["m/good"], 190).await;
    complete(store, &s, 195).await;
    let cancelled = start(store, &["m/good"], 200).await;
    end_run(store, &cancelled, RunStatus::Cancelled, 210).await;
    let running = start(store, &["m/good"], 300).await;

    // The backlog: three claimable due tasks; not the ones waiting for an
    // inactive module, due later, or disabled.
    put_inactive_module(store).await;
    create(store, with_steps(new_task("waits"), &["m/off"]), 350).await;
    let oldest = create(store, new_task("oldest"), 400).await;
    create(store, new_task("second"), 500).await;
    let mut high = new_task("high");
    high.priority = Priority::High;
    create(store, high, 600).await;
    let mut later = new_task("later");
    later.start_at = Some(t(5_000));
    create(store, later, 600).await;
    let mut disabled = new_task("disabled");
    disabled.disabled = true;
    create(store, disabled, 600).await;

    let facts = store.alert_facts(t(120), t(1_000)).await.expect("facts");
    assert_eq!(
        (facts.recent_completed, facts.recent_failed),
        (1, 1),
        "{facts:?}"
    );
    assert_eq!(facts.due_tasks, 3);
    assert_eq!(
        facts.oldest_due,
        Some(DueTask {
            task_id: oldest.id,
            name: "oldest".into(),
            next_run_at: t(400),
        })
    );
    assert_eq!(
        facts.running,
        [RunningRun {
            task_id: running.task.id,
            name: "run".into(),
            run_id: running.run_id,
            node: Some(NODE.into()),
            started_at: t(300),
            lease_expires_at: Some(t(330)),
            max_execution_time: 600,
        }]
    );
    assert_eq!(
        facts.failing_modules,
        [
            FailingModule {
                module: "m/bad".into(),
                consecutive_failures: 3,
                last_error: Some("error at 175".into()),
                last_failed_at: t(175),
            },
            FailingModule {
                module: "m/flaky".into(),
                consecutive_failures: 2,
                last_error: Some("error at 150".into()),
                last_failed_at: t(150),
            },
        ]
    );

    let quiet = store
        .alert_facts(t(100_000), t(100_000))
        .await
        .expect("quiet facts");
    assert_eq!((quiet.recent_completed, quiet.recent_failed), (0, 0));
    assert!(quiet.failing_modules.is_empty());
    assert_eq!(quiet.due_tasks, 4, "the later task is due by then");
}

/// A run the rescuer ended because its node stopped (a crash) is no failure
/// of its task: it is counted apart, out of the rates, the averages, the
/// modules' failures, the throughput and the alerts' outcomes; a run a limit
/// interrupted still fails.
pub(crate) async fn rescued_runs_are_counted_apart(store: &dyn Store) {
    let mut crashed = with_steps(new_task("crashed"), &["m/dump"]);
    crashed.max_attempts = 2;
    create(store, crashed, 100).await;
    let lost = claim_one(store, 100).await;
    store
        .start_step(lost.steps[0].step_run_id, Some("hash"), t(100))
        .await
        .expect("start step");
    // The server died; at its start the rescuer ends the run and retries.
    let mut rescue = run_end(RunStatus::Interrupted, TaskStatus::Scheduled, 400);
    rescue.last_result = RunResult::Interrupted;
    rescue.next_run_at = Some(t(400));
    rescue.attempts = 1;
    rescue.resume_next = true;
    rescue.rescued = true;
    assert!(
        store
            .finish_run(lost.task.id, lost.run_id, &rescue)
            .await
            .expect("rescue")
    );
    let retry = claim_one(store, 400).await;
    step(
        store,
        &retry,
        0,
        StepRunStatus::Completed,
        (400, 410),
        1_000,
    )
    .await;
    end_run(store, &retry, RunStatus::Completed, 410).await;
    // A limit stopped this one: a failure, as before.
    let limited = start(store, &["m/dump"], 500).await;
    step(
        store,
        &limited,
        0,
        StepRunStatus::Interrupted,
        (500, 530),
        1_000,
    )
    .await;
    end_run(store, &limited, RunStatus::Interrupted, 530).await;

    let stats = store.performance(t(0), t(1_000)).await.expect("stats");
    assert_eq!(
        (stats.runs, stats.completed, stats.failed, stats.rescued),
        (3, 1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        stats.average_duration_seconds,
        Some(20.0),
        "the retry (10 s) and the limited run (30 s), not the rescued one (300 s)"
    );
    let dump = &stats.modules[0];
    assert_eq!(
        (dump.runs, dump.completed, dump.failed),
        (3, 1, 1),
        "the step the crash interrupted ran, but is judged neither way"
    );
    let ended: (i64, i64) = stats
        .throughput
        .iter()
        .fold((0, 0), |(c, f), h| (c + h.completed, f + h.failed));
    assert_eq!(ended, (1, 1));

    let facts = store.alert_facts(t(0), t(1_000)).await.expect("facts");
    assert_eq!((facts.recent_completed, facts.recent_failed), (1, 1));
}
