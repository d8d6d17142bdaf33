//! Claiming due tasks and holding their leases.

use super::*;
use std::collections::HashSet;

pub(crate) async fn claim_order_priority_then_due(store: &dyn Store) {
    let at = |name: &str, priority, start| {
        let mut task = new_task(name);
        task.priority = priority;
        task.start_at = Some(t(start));
        task
    };
    let normal_old = create(store, at("normal old", Priority::Normal, 1), 0)
        .await
        .id;
    let low_oldest = create(store, at("low oldest", Priority::Low, 0), 0)
        .await
        .id;
    let high_new = create(store, at("high new", Priority::High, 9), 0).await.id;
    let normal_new = create(store, at("normal new", Priority::Normal, 5), 0)
        .await
        .id;
    let high_old = create(store, at("high old", Priority::High, 3), 0).await.id;
    let normal_tie = create(store, at("normal tie", Priority::Normal, 5), 0)
        .await
        .id;
    let high_future = create(store, at("high future", Priority::High, 100), 0)
        .await
        .id;

    let first: Vec<i64> = claim(store, 10, 4)
        .await
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(
        first,
        [high_old, high_new, normal_old, normal_new],
        "priority, then due time, then id"
    );
    let rest: Vec<i64> = claim(store, 10, 10)
        .await
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(
        rest,
        [normal_tie, low_oldest],
        "the not-yet-due high task waits"
    );
    assert!(claim(store, 99, 10).await.is_empty());
    let last: Vec<i64> = claim(store, 100, 10)
        .await
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(last, [high_future]);
    assert!(
        claim(store, 1000, 0).await.is_empty(),
        "limit 0 claims nothing"
    );
}

pub(crate) async fn claim_marks_running_and_plans_steps(store: &dyn Store) {
    let mut new = with_steps(
        new_task("planned"),
        &["p/first", "p/second", "p/third", "p/fourth"],
    );
    new.steps[0].sort_order = 20;
    new.steps[1].sort_order = 10;
    new.steps[2].sort_order = 20;
    new.steps[3].sort_order = 5;
    new.steps[3].status = StepStatus::Disabled;
    new.details = details(&[("k", json!("v"))]);
    new.secrets = vec![
        SealedSecret {
            name: "b".into(),
            nonce: vec![9],
            ciphertext: vec![8, 7],
        },
        SealedSecret {
            name: "a".into(),
            nonce: vec![1],
            ciphertext: vec![2],
        },
    ];
    let task = create(store, new, 0).await;
    let claimed = claim_one(store, 5).await;
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.trigger, RunTrigger::Schedule);
    assert_eq!(claimed.task.status, TaskStatus::Running);
    assert_eq!(claimed.task.attempts, 1);
    assert_eq!(claimed.task.current_run_id, Some(claimed.run_id));
    assert_eq!(claimed.task.last_run_at, Some(t(5)));
    assert_eq!(claimed.task.details, task.details);
    assert_eq!(claimed.task.steps.len(), 4);
    let mut secrets = claimed.secrets.clone();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        secrets[0],
        SealedSecret {
            name: "a".into(),
            nonce: vec![1],
            ciphertext: vec![2]
        }
    );
    assert_eq!(
        secrets[1],
        SealedSecret {
            name: "b".into(),
            nonce: vec![9],
            ciphertext: vec![8, 7]
        }
    );

    let order: Vec<&str> = claimed
        .steps
        .iter()
        .map(|p| p.step.controller.as_str())
        .collect();
    assert_eq!(
        order,
        ["p/fourth", "p/second", "p/first", "p/third"],
        "sort_order, ties by step id"
    );
    assert_eq!(
        statuses(&claimed),
        [
            StepRunStatus::Skipped,
            StepRunStatus::Pending,
            StepRunStatus::Pending,
            StepRunStatus::Pending
        ]
    );
    let ids: HashSet<i64> = claimed.steps.iter().map(|p| p.step_run_id).collect();
    assert_eq!(ids.len(), 4, "one step run per step");

    let stored = get(store, task.id).await;
    assert_eq!(stored.status, TaskStatus::Running);
    assert_eq!(stored.current_run_id, Some(claimed.run_id));
    let runs = store.list_runs(task.id, 10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(
        (run.id, run.status, run.trigger, run.attempt),
        (claimed.run_id, RunStatus::Running, RunTrigger::Schedule, 1)
    );
    assert_eq!(
        (run.node.as_str(), run.started_at, run.finished_at),
        (NODE, t(5), None)
    );
    let recorded: Vec<(i64, StepRunStatus)> = run.steps.iter().map(|s| (s.id, s.status)).collect();
    let planned: Vec<(i64, StepRunStatus)> = claimed
        .steps
        .iter()
        .map(|p| (p.step_run_id, p.status))
        .collect();
    assert_eq!(recorded, planned);
    assert!(
        claim(store, 6, 10).await.is_empty(),
        "a running task is not claimed again"
    );
}

pub(crate) async fn claim_waits_for_inactive_modules(store: &dyn Store) {
    store
        .put_module("m/on", "h-on", b"on", None, None, t(0))
        .await
        .expect("module");
    put_inactive_module(store).await;
    let blocked = create(
        store,
        with_steps(new_task("blocked"), &["m/on", "m/off"]),
        0,
    )
    .await;
    let unregistered = create(
        store,
        with_steps(new_task("unregistered"), &["m/missing"]),
        0,
    )
    .await;
    let mut skipping = with_steps(new_task("skipping"), &["m/on", "m/off"]);
    skipping.steps[1].status = StepStatus::Disabled;
    let skipping = create(store, skipping, 0).await;

    let runs = claim(store, 1, 10).await;
    let pinned: Vec<(String, Option<ModuleRef>)> = runs
        .iter()
        .flat_map(|c| c.steps.iter())
        .map(|p| (p.step.controller.clone(), p.module.clone()))
        .collect();
    let on = Some(ModuleRef {
        hash: "h-on".into(),
        active: true,
        limited: false,
    });
    let off = Some(ModuleRef {
        hash: "h-off".into(),
        active: false,
        limited: false,
    });
    for (controller, module) in &pinned {
        let expected = match controller.as_str() {
            "m/on" => &on,
            "m/off" => &off,
            _ => &None,
        };
        assert_eq!(module, expected, "the claim pins {controller}'s version");
    }
    let mut claimed: Vec<i64> = runs.iter().map(|c| c.task.id).collect();
    claimed.sort_unstable();
    assert_eq!(
        claimed,
        [unregistered.id, skipping.id],
        "a missing module fails its step at run time; a disabled step does not block"
    );
    store
        .set_module_active("m/off", true, t(2))
        .await
        .expect("activate");
    let now: Vec<i64> = claim(store, 2, 10)
        .await
        .iter()
        .map(|c| c.task.id)
        .collect();
    assert_eq!(now, [blocked.id]);
    // With no module held back the claim takes a shorter way (see
    // `sqlite/claim.rs`): deactivating one must bring the check back.
    store
        .set_module_active("m/off", false, t(3))
        .await
        .expect("deactivate again");
    create(store, with_steps(new_task("again"), &["m/off"]), 3).await;
    assert!(
        claim(store, 4, 10).await.is_empty(),
        "a module deactivated again holds its tasks back again"
    );
}

pub(crate) async fn concurrent_claims_never_overlap(store: &dyn Store) {
    const TASKS: i64 = 120;
    for i in 0..TASKS {
        create(store, new_task(&format!("t{i}")), 0).await;
    }
    let claimers = (0..4).map(|n| async move {
        let node = format!("node-{n}");
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_due(&node, t(1), t(31), 7).await.expect("claim");
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|c| (c.task.id, c.run_id)));
        }
    });
    let all: Vec<(i64, i64)> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let tasks: HashSet<i64> = all.iter().map(|(task, _)| *task).collect();
    let runs: HashSet<i64> = all.iter().map(|(_, run)| *run).collect();
    assert_eq!(all.len() as i64, TASKS, "every task claimed once");
    assert_eq!(tasks.len() as i64, TASKS);
    assert_eq!(runs.len() as i64, TASKS);
}

pub(crate) async fn leases_heartbeat_and_expiry(store: &dyn Store) {
    let task = create(store, new_task("leased"), 0).await;
    let other = create(store, new_task("other node"), 0).await;
    let mine = store
        .claim_due(NODE, t(0), t(30), 1)
        .await
        .expect("claim")
        .remove(0);
    let theirs = store
        .claim_due("node-b", t(0), t(30), 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!((mine.task.id, theirs.task.id), (task.id, other.id));

    assert!(
        store
            .expired_runs(t(29), None)
            .await
            .expect("expired")
            .is_empty()
    );
    assert!(
        store
            .heartbeat(NODE, &[mine.run_id, theirs.run_id], t(60))
            .await
            .expect("heartbeat")
            .is_empty(),
        "no cancel requested"
    );
    let expired = store.expired_runs(t(45), None).await.expect("expired");
    let expired: Vec<(i64, i64)> = expired.iter().map(|(task, run)| (task.id, *run)).collect();
    assert_eq!(
        expired,
        [(other.id, theirs.run_id)],
        "a heartbeat only extends the node's own leases"
    );

    let expired = store.expired_runs(t(61), None).await.expect("expired");
    assert_eq!(expired.len(), 2);
    let (rescued, run_id) = &expired[0];
    assert_eq!((rescued.id, *run_id), (task.id, mine.run_id));
    assert_eq!(rescued.status, TaskStatus::Running);
    assert_eq!(rescued.steps.len(), 1, "full tasks");

    let of_node = store
        .expired_runs(t(0), Some("node-b"))
        .await
        .expect("by node");
    let of_node: Vec<(i64, i64)> = of_node.iter().map(|(task, run)| (task.id, *run)).collect();
    assert_eq!(
        of_node,
        [(other.id, theirs.run_id)],
        "start-up rescue ignores the lease"
    );

    store
        .heartbeat(NODE, &[], t(90))
        .await
        .expect("empty heartbeat");
    complete(store, &mine, 62).await;
    store
        .heartbeat(NODE, &[mine.run_id], t(500))
        .await
        .expect("heartbeat a finished run");
    let expired: Vec<i64> = store
        .expired_runs(t(100), None)
        .await
        .expect("expired")
        .iter()
        .map(|(t, _)| t.id)
        .collect();
    assert_eq!(expired, [other.id], "finished runs hold no lease");
}

/// `create_and_claim` on an idle store: the task goes in claimed by the
/// node, exactly as a create and a claim would leave it. With a task due
/// before it, the new one waits its turn; a step on an inactive module
/// keeps it scheduled, as a claim would.
pub(crate) async fn a_create_claims_its_task_when_nothing_else_is_due(store: &dyn Store) {
    store
        .put_module("c/step", "h-step", b"step", None, None, t(0))
        .await
        .expect("module");
    store
        .put_module("c/off", "h-off", b"off", None, None, t(0))
        .await
        .expect("module");
    store
        .set_module_active("c/off", false, t(0))
        .await
        .expect("deactivate");
    let mut new = with_steps(new_task("at once"), &["c/step", "c/step", "c/off"]);
    new.steps[0].sort_order = 2;
    new.steps[1].sort_order = 1;
    new.steps[2].status = StepStatus::Disabled;
    new.details = details(&[("k", json!("v"))]);
    new.hook_url = Some("http://hooks.test/done".into());
    assert!(new.starts_at_create(t(5)));
    let (task, claimed) = store
        .create_and_claim(new, "n1", t(5), t(65))
        .await
        .expect("create and claim");
    let claimed = claimed.expect("an idle store claims the new task");
    assert_eq!(claimed.task.id, task.id);
    assert_eq!(claimed.task, task, "the task is returned as claimed");
    assert_eq!(get(store, task.id).await, task, "and as stored");
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.attempts, 1);
    assert_eq!(task.current_run_id, Some(claimed.run_id));
    assert_eq!(task.last_run_at, Some(t(5)));
    assert_eq!(task.details, details(&[("k", json!("v"))]));
    assert_eq!(
        (claimed.attempt, claimed.trigger),
        (1, RunTrigger::Schedule)
    );
    assert!(claimed.secrets.is_empty() && claimed.past_durations.is_empty());
    let planned: Vec<(i64, StepRunStatus, Option<ModuleRef>)> = claimed
        .steps
        .iter()
        .map(|p| (p.step.sort_order, p.status, p.module.clone()))
        .collect();
    let module = |hash: &str, active| {
        Some(ModuleRef {
            hash: hash.into(),
            active,
            limited: false,
        })
    };
    assert_eq!(
        planned,
        [
            (1, StepRunStatus::Pending, module("h-step", true)),
            (2, StepRunStatus::Pending, module("h-step", true)),
            (3, StepRunStatus::Skipped, module("h-off", false)),
        ],
        "in step order; a disabled step is skipped"
    );
    let runs = store.list_runs(task.id, 10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].id, runs[0].status, runs[0].node.as_str()),
        (claimed.run_id, RunStatus::Running, "n1")
    );
    let stored: Vec<(i64, StepRunStatus)> =
        runs[0].steps.iter().map(|s| (s.id, s.status)).collect();
    let expected: Vec<(i64, StepRunStatus)> = claimed
        .steps
        .iter()
        .map(|p| (p.step_run_id, p.status))
        .collect();
    assert_eq!(stored, expected, "the step runs are stored as planned");
    complete(store, &claimed, 6).await;
    assert_eq!(get(store, task.id).await.status, TaskStatus::Completed);

    // A task due before it goes first.
    let waiting = create(store, new_task("waiting"), 7).await;
    let (later, claimed) = store
        .create_and_claim(
            with_steps(new_task("later"), &["c/step"]),
            "n1",
            t(8),
            t(68),
        )
        .await
        .expect("create and claim");
    assert_ne!(claimed.as_ref().map(|c| c.task.id), Some(later.id));
    let rest: Vec<i64> = claim(store, 9, 10)
        .await
        .iter()
        .map(|c| c.task.id)
        .collect();
    let taken: Vec<i64> = claimed.iter().map(|c| c.task.id).chain(rest).collect();
    assert_eq!(taken, [waiting.id, later.id], "in the queue's order");

    // An enabled step on an inactive module: scheduled, as a claim leaves it.
    let (held, claimed) = store
        .create_and_claim(with_steps(new_task("held"), &["c/off"]), "n1", t(10), t(70))
        .await
        .expect("create and claim");
    assert!(claimed.is_none());
    assert_eq!(held.status, TaskStatus::Scheduled);
    assert_eq!(get(store, held.id).await, held);
}
