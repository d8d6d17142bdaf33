//! Cron schedules (`cron`, `timezone`) and steps edited without re-posting
//! their task.

use super::*;
use crate::schedule::CronSchedule;

fn on_cron(name: &str, cron: &str, timezone: &str) -> NewTask {
    NewTask {
        cron: Some(cron.to_string()),
        timezone: timezone.to_string(),
        ..new_task(name)
    }
}

/// The schedule's first time at or after `t(secs)`.
fn first_at(cron: &str, timezone: &str, secs: i64) -> DateTime<Utc> {
    CronSchedule::new(cron, timezone)
        .expect("valid")
        .first_from(t(secs))
        .expect("a time")
}

pub(crate) async fn cron_schedule_round_trips(store: &dyn Store) {
    let nightly = create(store, on_cron("nightly", "0 3 * * *", "Europe/Berlin"), 0).await;
    assert_eq!(nightly.cron.as_deref(), Some("0 3 * * *"));
    assert_eq!(nightly.timezone, "Europe/Berlin");
    let due = first_at("0 3 * * *", "Europe/Berlin", 0);
    assert!(due > t(0), "due at its first cron time, not at once");
    assert_eq!(nightly.next_run_at, Some(due));
    assert_eq!(get(store, nightly.id).await, nightly);
    let plain = create(store, new_task("plain"), 0).await;
    assert_eq!((plain.cron, plain.timezone.as_str()), (None, "UTC"));

    // A start time delays the first run to the schedule's first time from it.
    let mut later = on_cron("later", "0 3 * * *", "UTC");
    later.start_at = Some(t(5 * 86_400));
    let later = create(store, later, 0).await;
    assert_eq!(
        later.next_run_at,
        Some(first_at("0 3 * * *", "UTC", 5 * 86_400))
    );

    // The batched create, the list and the claim carry the schedule too.
    let batch = store
        .create_tasks(vec![on_cron("batched", "*/5 * * * *", "Asia/Tokyo")], t(0))
        .await
        .expect("batch")
        .remove(0)
        .expect("created")
        .0;
    assert_eq!(batch.cron.as_deref(), Some("*/5 * * * *"));
    assert_eq!(batch.timezone, "Asia/Tokyo");
    assert_eq!(get(store, batch.id).await, batch);
    let listed = store
        .list_tasks(&TaskFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    let listed = listed.iter().find(|t| t.id == nightly.id).expect("listed");
    assert_eq!(listed.timezone, "Europe/Berlin");
    let secs = (due - t(0)).num_seconds();
    let claimed = claim(store, secs, 10).await;
    let mine = claimed
        .iter()
        .find(|c| c.task.id == nightly.id)
        .expect("due at its cron time");
    assert_eq!(mine.task.cron.as_deref(), Some("0 3 * * *"));
    assert_eq!(mine.task.timezone, "Europe/Berlin");

    // Replacing by code replaces the schedule.
    let mut coded = on_cron("coded", "0 3 * * *", "UTC");
    coded.code = Some("nightly-export".into());
    create(store, coded.clone(), 0).await;
    coded.cron = None;
    coded.timezone = "UTC".into();
    coded.run_interval = 60;
    let replaced = create(store, coded, 1).await;
    assert_eq!((replaced.cron, replaced.run_interval), (None, 60));
    assert_eq!(replaced.next_run_at, Some(t(1)));
}

pub(crate) async fn patching_the_schedule_moves_the_next_run(store: &dyn Store) {
    let task = create(store, new_task("moves"), 0).await;
    assert_eq!(task.next_run_at, Some(t(0)));
    let patched = store
        .update_task(
            task.id,
            &TaskPatch {
                cron: Some(Some("30 2 * * *".into())),
                timezone: Some("America/New_York".into()),
                ..Default::default()
            },
            t(10),
        )
        .await
        .expect("patch");
    assert_eq!(patched.cron.as_deref(), Some("30 2 * * *"));
    assert_eq!(patched.timezone, "America/New_York");
    assert_eq!(
        patched.next_run_at,
        Some(first_at("30 2 * * *", "America/New_York", 10))
    );
    // Only the zone: the same wall-clock time elsewhere.
    let patched = store
        .update_task(
            task.id,
            &TaskPatch {
                timezone: Some("Europe/Berlin".into()),
                ..Default::default()
            },
            t(20),
        )
        .await
        .expect("patch zone");
    assert_eq!(patched.cron.as_deref(), Some("30 2 * * *"));
    assert_eq!(
        patched.next_run_at,
        Some(first_at("30 2 * * *", "Europe/Berlin", 20))
    );
    // Removing the cron keeps the next run; other fields leave it alone.
    let patched = store
        .update_task(
            task.id,
            &TaskPatch {
                cron: Some(None),
                ..Default::default()
            },
            t(30),
        )
        .await
        .expect("remove cron");
    assert_eq!(patched.cron, None);
    assert_eq!(
        patched.next_run_at,
        Some(first_at("30 2 * * *", "Europe/Berlin", 20))
    );

    // Enabling a disabled cron task: due at the schedule's next time.
    let mut off = on_cron("off", "0 * * * *", "UTC");
    off.disabled = true;
    let off = create(store, off, 0).await;
    assert_eq!(off.next_run_at, None);
    let on = store
        .update_task(
            off.id,
            &TaskPatch {
                disabled: Some(false),
                ..Default::default()
            },
            t(100),
        )
        .await
        .expect("enable");
    assert_eq!(on.next_run_at, Some(first_at("0 * * * *", "UTC", 100)));

    // A run now is not moved by a new schedule: it is what the task waits for.
    let now_task = store
        .run_task_now(on.id, None, t(200))
        .await
        .expect("run now");
    assert_eq!(now_task.next_run_at, Some(t(200)));
    let kept = store
        .update_task(
            on.id,
            &TaskPatch {
                cron: Some(Some("0 0 * * *".into())),
                ..Default::default()
            },
            t(201),
        )
        .await
        .expect("patch while a run now waits");
    assert_eq!(kept.next_run_at, Some(t(200)));
}

pub(crate) async fn steps_are_added_changed_reordered_and_removed(store: &dyn Store) {
    let task = create(store, with_steps(new_task("edited"), &["e/a", "e/b"]), 0).await;
    let (a, b) = (task.steps[0].id, task.steps[1].id);

    let mut added = new_step("e/c", 3);
    added.max_memory = Some(32 << 20);
    added.interrupt_on_step_fault = false;
    let edited = store
        .edit_steps(task.id, &StepEdit::Add(added.clone()), t(1))
        .await
        .expect("add");
    assert_eq!(edited.steps.len(), 3);
    let c = edited.steps[2].clone();
    assert!(c.id > b, "a new step gets a new id");
    assert_eq!(
        (c.task_id, c.sort_order, c.controller.as_str()),
        (task.id, 3, "e/c")
    );
    assert_eq!(c.settings, added.settings);
    assert_eq!(c.max_memory, Some(32 << 20));
    assert!(!c.interrupt_on_step_fault);
    assert_eq!(edited.updated_at, t(1));
    assert_eq!(get(store, task.id).await, edited);

    let changes = StepChanges {
        controller: Some("e/b2".into()),
        settings: Some(json!({"rows": 500})),
        max_execution_time: Some(120),
        max_memory: Some(Some(64 << 20)),
        interrupt_on_step_fault: Some(false),
        status: Some(StepStatus::Disabled),
        sort_order: Some(10),
    };
    let edited = store
        .edit_steps(
            task.id,
            &StepEdit::Change {
                step_id: b,
                changes,
            },
            t(2),
        )
        .await
        .expect("change");
    let changed = edited
        .steps
        .iter()
        .find(|s| s.id == b)
        .expect("still there");
    assert_eq!(changed.controller, "e/b2");
    assert_eq!(changed.settings, json!({"rows": 500}));
    assert_eq!(
        (changed.max_execution_time, changed.max_memory),
        (120, Some(64 << 20))
    );
    assert!(!changed.interrupt_on_step_fault);
    assert_eq!(changed.status, StepStatus::Disabled);
    let order: Vec<i64> = edited.steps.iter().map(|s| s.id).collect();
    assert_eq!(order, [a, c.id, b], "sort order 10 runs last");
    // Unchanged fields stay; a null cap removes the step's own.
    let edited = store
        .edit_steps(
            task.id,
            &StepEdit::Change {
                step_id: b,
                changes: StepChanges {
                    max_memory: Some(None),
                    ..Default::default()
                },
            },
            t(3),
        )
        .await
        .expect("remove the cap");
    let changed = edited.steps.iter().find(|s| s.id == b).unwrap();
    assert_eq!(
        (changed.max_memory, changed.max_execution_time),
        (None, 120)
    );
    assert_eq!(changed.controller, "e/b2");

    let edited = store
        .edit_steps(task.id, &StepEdit::Reorder(vec![b, a, c.id]), t(4))
        .await
        .expect("reorder");
    let order: Vec<(i64, i64)> = edited.steps.iter().map(|s| (s.id, s.sort_order)).collect();
    assert_eq!(order, [(b, 1), (a, 2), (c.id, 3)]);
    for bad in [vec![a, b], vec![a, b, c.id, c.id], vec![a, b, 9_999]] {
        let refused = store
            .edit_steps(task.id, &StepEdit::Reorder(bad.clone()), t(4))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{bad:?}: {refused:?}"
        );
    }

    let edited = store
        .edit_steps(task.id, &StepEdit::Remove { step_id: a }, t(5))
        .await
        .expect("remove");
    let left: Vec<i64> = edited.steps.iter().map(|s| s.id).collect();
    assert_eq!(left, [b, c.id]);
    store
        .edit_steps(task.id, &StepEdit::Remove { step_id: b }, t(6))
        .await
        .expect("remove another");
    let last = store
        .edit_steps(task.id, &StepEdit::Remove { step_id: c.id }, t(7))
        .await;
    assert!(
        matches!(last, Err(StoreError::Conflict(_))),
        "the last step stays: {last:?}"
    );

    // Steps of another task, and tasks that do not exist, are not found.
    let other = create(store, new_task("other"), 0).await;
    let foreign = StepEdit::Remove {
        step_id: other.steps[0].id,
    };
    assert!(matches!(
        store.edit_steps(task.id, &foreign, t(8)).await,
        Err(StoreError::NotFound(_))
    ));
    let change = StepEdit::Change {
        step_id: a,
        changes: StepChanges::default(),
    };
    assert!(matches!(
        store.edit_steps(task.id, &change, t(8)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .edit_steps(other.id + 1000, &StepEdit::Add(new_step("e/x", 1)), t(8))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(get(store, other.id).await.steps.len(), 1);
}

pub(crate) async fn a_claimed_run_keeps_the_steps_it_started_with(store: &dyn Store) {
    let task = create(store, with_steps(new_task("kept"), &["k/a", "k/b"]), 0).await;
    let (a, b) = (task.steps[0].id, task.steps[1].id);
    let run = claim_one(store, 1).await;
    assert_eq!(get(store, task.id).await.status, TaskStatus::Running);

    // While it runs: change a, remove b, add c.
    store
        .edit_steps(
            task.id,
            &StepEdit::Change {
                step_id: a,
                changes: StepChanges {
                    settings: Some(json!({"new": true})),
                    ..Default::default()
                },
            },
            t(2),
        )
        .await
        .expect("change while running");
    store
        .edit_steps(task.id, &StepEdit::Remove { step_id: b }, t(2))
        .await
        .expect("remove while running");
    store
        .edit_steps(task.id, &StepEdit::Add(new_step("k/c", 5)), t(2))
        .await
        .expect("add while running");
    let during = get(store, task.id).await;
    assert_eq!(during.status, TaskStatus::Running);
    assert_eq!(during.current_run_id, Some(run.run_id));

    // The removed step's checkpoint is dropped, not refused.
    store
        .save_checkpoint(task.id, b, b"half", t(3))
        .await
        .expect("a removed step's checkpoint is no error");
    assert_eq!(store.load_checkpoint(task.id, b).await.expect("load"), None);

    // The run executes and records its own two steps.
    complete(store, &run, 4).await;
    let history = store.list_runs(task.id, 1).await.expect("runs").remove(0);
    let ran: Vec<(i64, &str)> = history
        .steps
        .iter()
        .map(|s| (s.step_id, s.controller.as_str()))
        .collect();
    assert_eq!(ran, [(a, "k/a"), (b, "k/b")]);
    assert!(
        history
            .steps
            .iter()
            .all(|s| s.status == StepRunStatus::Completed)
    );

    // The next run has the edited steps.
    store
        .run_task_now(task.id, None, t(10))
        .await
        .expect("run again");
    let next = claim_one(store, 10).await;
    let planned: Vec<(String, Value)> = next
        .steps
        .iter()
        .map(|p| (p.step.controller.clone(), p.step.settings.clone()))
        .collect();
    assert_eq!(planned[0], ("k/a".to_string(), json!({"new": true})));
    assert_eq!(planned[1].0, "k/c");
    assert_eq!(planned.len(), 2);
}

pub(crate) async fn a_retry_runs_a_changed_step_again(store: &dyn Store) {
    let task = create(
        store,
        with_steps(new_task("retried"), &["r/a", "r/b", "r/c"]),
        0,
    )
    .await;
    let ids: Vec<i64> = task.steps.iter().map(|s| s.id).collect();
    let first = claim_one(store, 1).await;
    for planned in &first.steps[..2] {
        store
            .finish_step(planned.step_run_id, &step_end(StepRunStatus::Completed, 2))
            .await
            .expect("done");
    }
    store
        .save_checkpoint(task.id, ids[0], b"a's", t(2))
        .await
        .expect("checkpoint a");
    store
        .save_checkpoint(task.id, ids[1], b"b's", t(2))
        .await
        .expect("checkpoint b");
    let end = retry_end(RunStatus::Failed, 3, 10, 1);
    assert!(
        store
            .finish_run(task.id, first.run_id, &end)
            .await
            .expect("finish")
    );

    // b gets other settings; a is only renumbered (it does the same work).
    let settings = StepChanges {
        settings: Some(json!({"fixed": true})),
        ..Default::default()
    };
    store
        .edit_steps(
            task.id,
            &StepEdit::Change {
                step_id: ids[1],
                changes: settings,
            },
            t(5),
        )
        .await
        .expect("change b");
    let renumber = StepChanges {
        sort_order: Some(1),
        ..Default::default()
    };
    store
        .edit_steps(
            task.id,
            &StepEdit::Change {
                step_id: ids[0],
                changes: renumber,
            },
            t(5),
        )
        .await
        .expect("renumber a");
    assert_eq!(
        store.load_checkpoint(task.id, ids[1]).await.expect("load"),
        None,
        "a changed step starts over"
    );
    assert_eq!(
        store
            .load_checkpoint(task.id, ids[0])
            .await
            .expect("load")
            .as_deref(),
        Some(&b"a's"[..])
    );

    let retry = claim_one(store, 10).await;
    assert_eq!(retry.trigger, RunTrigger::Retry);
    assert_eq!(
        statuses(&retry),
        [
            StepRunStatus::Reused,
            StepRunStatus::Pending,
            StepRunStatus::Pending
        ]
    );
    assert_eq!(retry.steps[1].step.settings, json!({"fixed": true}));
}

pub(crate) async fn a_step_about_to_run_alone_is_not_removed(store: &dyn Store) {
    let task = create(store, with_steps(new_task("alone"), &["s/a", "s/b"]), 0).await;
    let b = task.steps[1].id;
    store
        .run_task_now(task.id, Some(b), t(1))
        .await
        .expect("run b alone");
    let refused = store
        .edit_steps(task.id, &StepEdit::Remove { step_id: b }, t(2))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    // Once its run started, it may go.
    let run = claim_one(store, 3).await;
    store
        .edit_steps(task.id, &StepEdit::Remove { step_id: b }, t(4))
        .await
        .expect("removed while its run runs");
    assert_eq!(
        statuses(&run),
        [StepRunStatus::Skipped, StepRunStatus::Pending]
    );
}
