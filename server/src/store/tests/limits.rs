//! Concurrency and rate limits of modules and tasks, as claims honour them.

use super::*;

async fn limited_module(store: &dyn Store, path: &str, limits: ModuleLimits) {
    store
        .put_module(
            path,
            &format!("h-{path}"),
            path.as_bytes(),
            None,
            None,
            t(0),
        )
        .await
        .expect("module");
    let module = store
        .set_module_limits(path, limits, t(0))
        .await
        .expect("limits");
    assert_eq!(module.limits, limits, "the module reads back its limits");
}

async fn tasks_on(store: &dyn Store, controllers: &[&str], count: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..count {
        let task = with_steps(new_task(&format!("on {controllers:?} #{i}")), controllers);
        ids.push(create(store, task, 0).await.id);
    }
    ids
}

fn ids(runs: &[ClaimedRun]) -> Vec<i64> {
    runs.iter().map(|r| r.task.id).collect()
}

pub(crate) async fn module_max_running_caps_a_claim_and_frees_on_run_end(store: &dyn Store) {
    let limits = ModuleLimits {
        max_running: Some(2),
        max_starts_per_minute: None,
    };
    limited_module(store, "m/mail", limits).await;
    let mail = tasks_on(store, &["m/mail"], 4).await;
    let other = tasks_on(store, &["test/noop"], 1).await;
    // A task whose only use of the module is a disabled step is not limited.
    let mut skipping = with_steps(new_task("skipping"), &["test/noop", "m/mail"]);
    skipping.steps[1].status = StepStatus::Disabled;
    let skipping = create(store, skipping, 0).await.id;

    let first = claim(store, 1, 10).await;
    let mut claimed = ids(&first);
    claimed.sort_unstable();
    assert_eq!(
        claimed,
        [mail[0], mail[1], other[0], skipping],
        "one batch takes no more than the module's room, in claim order"
    );
    let limited = |run: &ClaimedRun| run.steps[0].module.as_ref().is_some_and(|m| m.limited);
    assert!(
        first
            .iter()
            .all(|run| limited(run) == mail.contains(&run.task.id)),
        "a claim says which steps' modules are limited"
    );
    let usage = store.module_usage(t(1)).await.expect("usage");
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].running, usage[0].starts_last_minute), (2, 2));
    assert!(usage[0].holds_back().is_some());
    assert!(claim(store, 2, 10).await.is_empty(), "the module is full");

    let ended = first.iter().find(|r| r.task.id == mail[0]).expect("run");
    complete(store, ended, 3).await;
    let next = claim(store, 4, 10).await;
    assert_eq!(ids(&next), [mail[2]], "a run's end frees its slot");
    assert!(claim(store, 5, 10).await.is_empty());

    store
        .set_module_limits("m/mail", ModuleLimits::default(), t(6))
        .await
        .expect("lift");
    let lifted = claim(store, 7, 10).await;
    assert_eq!(ids(&lifted), [mail[3]], "no limit, no wait");
    assert!(!limited(&lifted[0]), "the limit is gone");
    assert!(
        store.module_usage(t(7)).await.expect("usage").is_empty(),
        "a module without limits has no usage"
    );
}

pub(crate) async fn module_rate_counts_the_starts_of_the_last_minute(store: &dyn Store) {
    let limits = ModuleLimits {
        max_running: None,
        max_starts_per_minute: Some(2),
    };
    limited_module(store, "m/rate", limits).await;
    let tasks = tasks_on(store, &["m/rate"], 3).await;
    let first = claim(store, 1, 10).await;
    assert_eq!(ids(&first), [tasks[0], tasks[1]]);
    for run in &first {
        complete(store, run, 2).await;
    }
    assert!(
        claim(store, 30, 10).await.is_empty(),
        "ended runs still count as starts of the minute"
    );
    let usage = store.module_usage(t(30)).await.expect("usage");
    assert_eq!((usage[0].running, usage[0].starts_last_minute), (0, 2));
    assert!(
        usage[0]
            .holds_back()
            .expect("held")
            .contains("max_starts_per_minute")
    );
    assert_eq!(
        ids(&claim(store, 62, 10).await),
        [tasks[2]],
        "a minute later"
    );
}

pub(crate) async fn task_rate_holds_back_its_own_runs(store: &dyn Store) {
    let mut limited = new_task("limited");
    limited.max_starts_per_minute = Some(1);
    let limited = create(store, limited, 0).await;
    assert_eq!(get(store, limited.id).await.max_starts_per_minute, Some(1));
    let free = create(store, new_task("free"), 0).await;

    let first = claim_one(store, 1).await;
    assert_eq!(first.task.id, limited.id);
    complete(store, &first, 2).await;
    store
        .run_task_now(limited.id, None, t(3))
        .await
        .expect("run now");
    assert_eq!(
        ids(&claim(store, 4, 10).await),
        [free.id],
        "the limited task started once in the last minute"
    );
    assert_eq!(
        store
            .task_starts_since(limited.id, t(4 - 60))
            .await
            .expect("starts"),
        1
    );
    assert_eq!(ids(&claim(store, 62, 10).await), [limited.id]);

    let patched = store
        .update_task(
            limited.id,
            &TaskPatch {
                max_starts_per_minute: Some(None),
                ..TaskPatch::default()
            },
            t(63),
        )
        .await
        .expect("patch");
    assert_eq!(
        patched.max_starts_per_minute, None,
        "null removes the limit"
    );
}

pub(crate) async fn concurrent_claims_never_exceed_a_modules_room(store: &dyn Store) {
    let limits = ModuleLimits {
        max_running: Some(3),
        max_starts_per_minute: None,
    };
    limited_module(store, "m/shared", limits).await;
    tasks_on(store, &["m/shared"], 40).await;
    // Each claimer asks again until the module is full for it: on
    // PostgreSQL the claims overlap in time, on SQLite they queue.
    let claimers = (0..4).map(|n| async move {
        let node = format!("node-{n}");
        let mut mine = 0;
        loop {
            let batch = store.claim_due(&node, t(1), t(31), 2).await.expect("claim");
            if batch.is_empty() {
                return mine;
            }
            mine += batch.len();
        }
    });
    let claimed: usize = futures::future::join_all(claimers).await.into_iter().sum();
    assert_eq!(
        claimed, 3,
        "four nodes together start no more than the module's room"
    );
    let usage = store.module_usage(t(1)).await.expect("usage");
    assert_eq!(usage[0].running, 3);
}
