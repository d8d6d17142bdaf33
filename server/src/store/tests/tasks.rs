//! Tasks as users see them.

use super::*;

pub(crate) async fn create_and_get(store: &dyn Store) {
    let mut new = with_steps(new_task("backup"), &["tool/dump", "tool/upload"]);
    new.priority = Priority::High;
    new.run_interval = 3600;
    new.details = details(&[("db", json!("shop")), ("tables", json!(["a", "b"]))]);
    new.secrets = vec![SealedSecret {
        name: "password".into(),
        nonce: vec![1, 2],
        ciphertext: vec![3, 4],
    }];
    new.steps[1].max_memory = Some(1 << 20);
    new.steps[1].interrupt_on_step_fault = false;
    let (task, created) = store.create_task(new.clone(), t(0)).await.expect("create");
    assert!(created);
    assert_eq!(task.name, "backup");
    assert_eq!(task.status, TaskStatus::Scheduled);
    assert_eq!(task.priority, Priority::High);
    assert_eq!(task.run_interval, 3600);
    assert_eq!(task.next_run_at, Some(t(0)), "no start_at: due at once");
    assert_eq!(task.attempts, 0);
    assert_eq!(task.details, new.details);
    assert_eq!(task.secret_names, vec!["password".to_string()]);
    assert_eq!(task.created_by.as_deref(), Some("tester"));
    assert_eq!((task.created_at, task.updated_at), (t(0), t(0)));
    assert_eq!(task.current_run_id, None);
    assert_eq!(task.steps.len(), 2);
    for (step, want) in task.steps.iter().zip(&new.steps) {
        assert_eq!(step.task_id, task.id);
        assert_eq!(step.controller, want.controller);
        assert_eq!(step.sort_order, want.sort_order);
        assert_eq!(step.settings, want.settings);
        assert_eq!(step.max_memory, want.max_memory);
        assert_eq!(step.interrupt_on_step_fault, want.interrupt_on_step_fault);
        assert_eq!(step.status, StepStatus::Scheduled);
    }
    assert_eq!(get(store, task.id).await, task);
    assert!(store.get_task(task.id + 1000).await.expect("get").is_none());
}

pub(crate) async fn create_disabled_or_later(store: &dyn Store) {
    let mut later = new_task("later");
    later.start_at = Some(t(500));
    let later = create(store, later, 0).await;
    assert_eq!(later.next_run_at, Some(t(500)));
    assert_eq!(later.start_at, Some(t(500)));

    let mut off = new_task("off");
    off.disabled = true;
    let off = create(store, off, 0).await;
    assert_eq!(off.status, TaskStatus::Disabled);
    assert_eq!(off.next_run_at, None);

    assert!(claim(store, 499, 10).await.is_empty(), "neither is due");
    let claimed = claim(store, 500, 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task.id, later.id);
}

pub(crate) async fn code_upsert_replaces_definition(store: &dyn Store) {
    let mut first = with_steps(new_task("v1"), &["tool/old-a", "tool/old-b"]);
    first.code = Some("nightly".into());
    first.details = details(&[("keep", json!(1)), ("drop", json!(2))]);
    first.secrets = vec![SealedSecret {
        name: "old".into(),
        nonce: vec![0],
        ciphertext: vec![0],
    }];
    let (v1, created) = store.create_task(first, t(0)).await.expect("create");
    assert!(created);
    let claimed = claim_one(store, 1).await;
    complete(store, &claimed, 2).await;
    store
        .save_checkpoint(v1.id, v1.steps[0].id, b"old", t(2))
        .await
        .expect("checkpoint");

    let mut second = with_steps(new_task("v2"), &["tool/new"]);
    second.code = Some("nightly".into());
    second.priority = Priority::Low;
    second.start_at = Some(t(100));
    second.details = details(&[("keep", json!("changed"))]);
    second.secrets = vec![SealedSecret {
        name: "new".into(),
        nonce: vec![1],
        ciphertext: vec![1],
    }];
    let (v2, created) = store.create_task(second, t(10)).await.expect("replace");
    assert!(!created);
    assert_eq!(v2.id, v1.id, "same task");
    assert_eq!(v2.name, "v2");
    assert_eq!(v2.priority, Priority::Low);
    assert_eq!(v2.status, TaskStatus::Scheduled);
    assert_eq!(v2.next_run_at, Some(t(100)));
    assert_eq!(v2.details, details(&[("keep", json!("changed"))]));
    assert_eq!(v2.secret_names, vec!["new".to_string()]);
    assert_eq!(v2.steps.len(), 1);
    assert_eq!(v2.steps[0].controller, "tool/new");
    assert_eq!(v2.created_at, t(0));
    assert_eq!(
        store
            .load_checkpoint(v1.id, v1.steps[0].id)
            .await
            .expect("load"),
        None
    );

    // History stays readable through the step runs' copies.
    let runs = store.list_runs(v2.id, 10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    let controllers: Vec<&str> = runs[0]
        .steps
        .iter()
        .map(|s| s.controller.as_str())
        .collect();
    assert_eq!(controllers, ["tool/old-a", "tool/old-b"]);
    assert_eq!(runs[0].steps[1].sort_order, 2);

    let listed = store
        .list_tasks(&TaskFilter {
            code: Some("nightly".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "one task per code");
}

pub(crate) async fn code_upsert_conflicts_while_running(store: &dyn Store) {
    let mut new = new_task("v1");
    new.code = Some("busy".into());
    store.create_task(new.clone(), t(0)).await.expect("create");
    let claimed = claim_one(store, 1).await;
    new.name = "v2".into();
    match store.create_task(new.clone(), t(2)).await {
        Err(StoreError::Conflict(message)) => {
            assert_eq!(
                message,
                "task `busy` is running; try again when it finishes"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(get(store, claimed.task.id).await.name, "v1");
    complete(store, &claimed, 3).await;
    let (task, created) = store
        .create_task(new, t(4))
        .await
        .expect("replace after the run");
    assert!(!created);
    assert_eq!(task.name, "v2");
}

pub(crate) async fn list_filters_and_order(store: &dyn Store) {
    let a = create(store, with_steps(new_task("a"), &["mod/x"]), 0).await;
    let mut b = with_steps(new_task("b"), &["mod/y", "mod/x"]);
    b.code = Some("bee".into());
    let b = create(store, b, 0).await;
    let mut c = with_steps(new_task("c"), &["mod/y"]);
    c.disabled = true;
    let c = create(store, c, 0).await;

    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let all = TaskFilter {
        limit: 10,
        ..Default::default()
    };
    let listed = store.list_tasks(&all).await.expect("list");
    assert_eq!(ids(listed.clone()), [c.id, b.id, a.id], "newest first");
    assert_eq!(listed[1], b, "full tasks, with steps and details");
    let by_status = TaskFilter {
        status: Some(TaskStatus::Disabled),
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_tasks(&by_status).await.expect("list")),
        [c.id]
    );
    let by_code = TaskFilter {
        code: Some("bee".into()),
        ..all.clone()
    };
    assert_eq!(ids(store.list_tasks(&by_code).await.expect("list")), [b.id]);
    let by_module = TaskFilter {
        module: Some("mod/x".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_tasks(&by_module).await.expect("list")),
        [b.id, a.id]
    );
    let combined = TaskFilter {
        module: Some("mod/y".into()),
        status: Some(TaskStatus::Scheduled),
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_tasks(&combined).await.expect("list")),
        [b.id]
    );
    let limited = TaskFilter {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_tasks(&limited).await.expect("list")),
        [c.id, b.id]
    );
    let none = TaskFilter {
        code: Some("nope".into()),
        ..all
    };
    assert!(store.list_tasks(&none).await.expect("list").is_empty());
}

pub(crate) async fn list_cursor_stable_under_inserts(store: &dyn Store) {
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(create(store, new_task(&format!("t{i}")), i).await.id);
    }
    let page = |before_id| TaskFilter {
        before_id,
        limit: 3,
        ..Default::default()
    };
    let first: Vec<i64> = store
        .list_tasks(&page(None))
        .await
        .expect("list")
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(first, [created[6], created[5], created[4]]);

    // New tasks arrive between pages: they must not shift the next page.
    for i in 0..4 {
        create(store, new_task(&format!("late{i}")), 10 + i).await;
    }
    let mut seen = first.clone();
    let mut cursor = first.last().copied();
    loop {
        let next: Vec<i64> = store
            .list_tasks(&page(cursor))
            .await
            .expect("list")
            .iter()
            .map(|t| t.id)
            .collect();
        if next.is_empty() {
            break;
        }
        cursor = next.last().copied();
        seen.extend(next);
    }
    let mut expected = created.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every original task exactly once, in order");
}

pub(crate) async fn update_patches_fields(store: &dyn Store) {
    let mut new = with_steps(new_task("before"), &["a/one", "a/two"]);
    new.details = details(&[
        ("keep", json!(1)),
        ("remove", json!(2)),
        ("change", json!(3)),
    ]);
    let task = create(store, new, 0).await;
    let patch = TaskPatch {
        name: Some("after".into()),
        priority: Some(Priority::High),
        run_interval: Some(60),
        max_execution_time: Some(30),
        max_attempts: Some(9),
        details: Some(details(&[
            ("remove", Value::Null),
            ("change", json!({"x": 1})),
            ("add", json!("new")),
        ])),
        step_status: vec![(task.steps[1].id, StepStatus::Disabled)],
        ..Default::default()
    };
    let updated = store
        .update_task(task.id, &patch, t(5))
        .await
        .expect("update");
    assert_eq!(updated.name, "after");
    assert_eq!(updated.priority, Priority::High);
    assert_eq!(
        (
            updated.run_interval,
            updated.max_execution_time,
            updated.max_attempts
        ),
        (60, 30, 9)
    );
    assert_eq!(
        updated.details,
        details(&[
            ("add", json!("new")),
            ("change", json!({"x": 1})),
            ("keep", json!(1))
        ])
    );
    assert_eq!(updated.steps[0].status, StepStatus::Scheduled);
    assert_eq!(updated.steps[1].status, StepStatus::Disabled);
    assert_eq!(updated.updated_at, t(5));
    assert_eq!(updated.status, TaskStatus::Scheduled, "unchanged");
    assert_eq!(get(store, task.id).await, updated);

    let moved = store
        .update_task(
            task.id,
            &TaskPatch {
                start_at: Some(t(300)),
                ..Default::default()
            },
            t(6),
        )
        .await
        .expect("move start");
    assert_eq!(moved.start_at, Some(t(300)));
    assert_eq!(
        moved.next_run_at,
        Some(t(300)),
        "a waiting task follows its new start time"
    );

    let foreign_step = TaskPatch {
        step_status: vec![(task.steps[0].id + 1000, StepStatus::Disabled)],
        ..Default::default()
    };
    assert!(matches!(
        store.update_task(task.id, &foreign_step, t(7)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.update_task(task.id + 1000, &patch, t(7)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn update_disable_and_enable(store: &dyn Store) {
    let mut new = new_task("toggle");
    new.start_at = Some(t(100));
    let task = create(store, new, 0).await;
    let disable = TaskPatch {
        disabled: Some(true),
        ..Default::default()
    };
    let enable = TaskPatch {
        disabled: Some(false),
        ..Default::default()
    };

    let off = store
        .update_task(task.id, &disable, t(1))
        .await
        .expect("disable");
    assert_eq!((off.status, off.next_run_at), (TaskStatus::Disabled, None));
    assert!(
        claim(store, 200, 10).await.is_empty(),
        "disabled tasks are not claimed"
    );
    let on = store
        .update_task(task.id, &enable, t(50))
        .await
        .expect("enable");
    assert_eq!(
        (on.status, on.next_run_at),
        (TaskStatus::Scheduled, Some(t(100))),
        "due at start_at"
    );
    store
        .update_task(task.id, &disable, t(150))
        .await
        .expect("disable");
    let on = store
        .update_task(task.id, &enable, t(200))
        .await
        .expect("enable");
    assert_eq!(on.next_run_at, Some(t(200)), "start_at passed: due now");
    let again = store
        .update_task(task.id, &enable, t(201))
        .await
        .expect("enable twice");
    assert_eq!(
        again.next_run_at,
        Some(t(200)),
        "enabling a scheduled task changes nothing"
    );

    let claimed = claim_one(store, 200).await;
    match store.update_task(task.id, &disable, t(201)).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("running"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let renamed = store
        .update_task(
            task.id,
            &TaskPatch {
                name: Some("renamed".into()),
                ..Default::default()
            },
            t(202),
        )
        .await
        .expect("other patches are fine while running");
    assert_eq!(
        (renamed.name.as_str(), renamed.status),
        ("renamed", TaskStatus::Running)
    );
    complete(store, &claimed, 203).await;
    let off = store
        .update_task(task.id, &disable, t(204))
        .await
        .expect("disable a completed task");
    assert_eq!(off.status, TaskStatus::Disabled);
}

pub(crate) async fn delete_task_and_everything_it_owns(store: &dyn Store) {
    let task = create(store, new_task("doomed"), 0).await;
    let other = create(store, new_task("other"), 0).await;
    let claimed = claim(store, 1, 10).await;
    assert_eq!(claimed.len(), 2);
    let mine = claimed
        .iter()
        .find(|c| c.task.id == task.id)
        .expect("claimed");
    let step_id = mine.steps[0].step.id;
    store
        .save_checkpoint(task.id, step_id, b"cp", t(1))
        .await
        .expect("checkpoint");
    store
        .write_artifact(
            task.id,
            mine.run_id,
            step_id,
            "out.txt",
            b"data",
            false,
            100,
            t(1),
        )
        .await
        .expect("artifact");
    store
        .append_events(&[log_event(task.id, "hello", 1)])
        .await
        .expect("events");
    match store.delete_task(task.id).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("running"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    for c in &claimed {
        complete(store, c, 2).await;
    }
    store.delete_task(task.id).await.expect("delete");
    assert!(store.get_task(task.id).await.expect("get").is_none());
    assert!(store.list_runs(task.id, 10).await.expect("runs").is_empty());
    assert!(
        store
            .list_artifacts(task.id)
            .await
            .expect("artifacts")
            .is_empty()
    );
    assert!(
        store
            .list_events(task.id, false, 10)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(
        store
            .load_checkpoint(task.id, step_id)
            .await
            .expect("checkpoint"),
        None
    );
    assert!(matches!(
        store.delete_task(task.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.list_runs(other.id, 10).await.expect("runs").len(),
        1,
        "others untouched"
    );
}

/// A batch of creates gives, item by item, what single creates would: the
/// returned tasks are what is stored, a conflict fails only its item, and
/// ids keep rising (never reused) across batches and deletes.
pub(crate) async fn create_batch_matches_single_creates(store: &dyn Store) {
    let mut busy = new_task("busy");
    busy.code = Some("busy".into());
    create(store, busy.clone(), 0).await;
    claim_one(store, 0).await;

    let mut full = with_steps(new_task("full"), &["m/a", "m/b", "m/c"]);
    full.details = details(&[("db", json!("shop")), ("n", json!(3))]);
    full.secrets = vec![SealedSecret {
        name: "key".into(),
        nonce: vec![1],
        ciphertext: vec![2, 3],
    }];
    full.steps[2].status = StepStatus::Disabled;
    let mut later = new_task("later");
    later.start_at = Some(t(500));
    let mut disabled = new_task("disabled");
    disabled.disabled = true;
    let mut coded = new_task("coded");
    coded.code = Some("coded".into());

    let results = store
        .create_tasks(vec![full, busy, later, coded, disabled], t(1))
        .await
        .expect("batch");
    assert!(
        matches!(results[1], Err(StoreError::Conflict(_))),
        "the running code conflicts"
    );
    let tasks: Vec<Task> = results
        .into_iter()
        .filter_map(|r| {
            r.ok().map(|(task, created)| {
                assert!(created);
                task
            })
        })
        .collect();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["full", "later", "coded", "disabled"],
        "results in request order"
    );
    for task in &tasks {
        assert_eq!(&get(store, task.id).await, task, "{} as stored", task.name);
    }
    assert_eq!(tasks[0].steps.len(), 3);
    assert_eq!(tasks[0].secret_names, ["key"]);
    assert_eq!(tasks[1].next_run_at, Some(t(500)));
    assert_eq!(tasks[3].status, TaskStatus::Disabled);
    let mut ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "distinct ids");

    let highest = *ids.last().expect("ids");
    store.delete_task(highest).await.expect("delete");
    let again = store
        .create_tasks(vec![with_steps(new_task("again"), &["m/a"])], t(2))
        .await
        .expect("batch")
        .remove(0)
        .expect("created")
        .0;
    assert!(again.id > highest, "a deleted task's id is not reused");
    assert_eq!(get(store, again.id).await, again);
    let live_step_ids: Vec<i64> = tasks
        .iter()
        .filter(|t| t.id != highest)
        .flat_map(|t| t.steps.iter().map(|s| s.id))
        .collect();
    assert!(
        again.steps.iter().all(|s| !live_step_ids.contains(&s.id)),
        "step ids are not shared with live tasks"
    );
}
