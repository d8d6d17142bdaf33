//! Events, tokens and retention.

use super::*;

pub(crate) async fn events_batch_and_tail(store: &dyn Store) {
    let task = create(store, new_task("chatty"), 0).await;
    let other = create(store, new_task("other"), 0).await;
    let status = EventRecord {
        task_id: task.id,
        run_id: Some(7),
        step_id: Some(3),
        kind: "step".into(),
        level: None,
        message: "step started".into(),
        data: Some(json!({"progress": 12.5, "nested": {"list": [1, "two", null]}})),
        created_at: t(1),
    };
    let mut batch = vec![status.clone()];
    batch.extend((0..5).map(|i| log_event(task.id, &format!("line {i}"), 2 + i)));
    batch.push(log_event(other.id, "elsewhere", 3));
    let mut last = status.clone();
    last.message = "step done".into();
    last.created_at = t(10);
    batch.push(last.clone());
    store.append_events(&batch).await.expect("append");
    store
        .append_events(&[])
        .await
        .expect("an empty batch is fine");

    let all = store.list_events(task.id, false, 100).await.expect("list");
    assert_eq!(all.len(), 7);
    assert_eq!(all[0], status, "every field round-trips");
    assert_eq!(all[6], last);
    let messages =
        |events: &[EventRecord]| events.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
    assert_eq!(
        messages(&all[1..6]),
        ["line 0", "line 1", "line 2", "line 3", "line 4"],
        "oldest first"
    );
    let logs = store.list_events(task.id, true, 100).await.expect("logs");
    assert_eq!(logs.len(), 5);
    assert!(
        logs.iter()
            .all(|e| e.kind == "log" && e.level.as_deref() == Some("info"))
    );
    let tail = store.list_events(task.id, false, 3).await.expect("tail");
    assert_eq!(
        messages(&tail),
        ["line 3", "line 4", "step done"],
        "the last `limit`, oldest first"
    );
    let log_tail = store.list_events(task.id, true, 2).await.expect("log tail");
    assert_eq!(messages(&log_tail), ["line 3", "line 4"]);
    assert_eq!(
        messages(&store.list_events(other.id, false, 10).await.expect("other")),
        ["elsewhere"]
    );
}

pub(crate) async fn tokens_find_and_revoke(store: &dyn Store) {
    assert_eq!(store.count_tokens().await.expect("count"), 0);
    let admin = store
        .create_token("first admin", Role::Admin, "hash-admin", t(0))
        .await
        .expect("create");
    assert_eq!(
        (
            admin.name.as_str(),
            admin.role,
            admin.created_at,
            admin.last_used_at
        ),
        ("first admin", Role::Admin, t(0), None)
    );
    let viewer = store
        .create_token("dashboard", Role::Viewer, "hash-viewer", t(1))
        .await
        .expect("create");
    assert_eq!(store.count_tokens().await.expect("count"), 2);

    let found = store
        .find_token("hash-viewer")
        .await
        .expect("find")
        .expect("live token");
    assert_eq!((found.id, found.role), (viewer.id, Role::Viewer));
    assert!(found.last_used_at.is_some(), "marks the token used");
    let listed = store.list_tokens().await.expect("list");
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [admin.id, viewer.id]
    );
    assert_eq!(listed[1].last_used_at, found.last_used_at);
    assert_eq!(store.find_token("hash-unknown").await.expect("find"), None);

    store.revoke_token(viewer.id).await.expect("revoke");
    assert_eq!(
        store.find_token("hash-viewer").await.expect("find"),
        None,
        "revoked tokens do not authenticate"
    );
    assert_eq!(store.count_tokens().await.expect("count"), 1);
    assert_eq!(store.list_tokens().await.expect("list").len(), 1);
    assert!(matches!(
        store.revoke_token(viewer.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_token(admin.id + 1000).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn prune_keeps_latest_runs(store: &dyn Store) {
    let mut new = new_task("recurring");
    new.run_interval = 10;
    let task = create(store, new, 0).await;
    let single = create(store, with_steps(new_task("single"), &["s/only"]), 0).await;
    let mut runs = Vec::new();
    for at in [0, 10, 20] {
        for claimed in claim(store, at, 10).await {
            let step = claimed.steps[0].step.id;
            store
                .write_artifact(
                    claimed.task.id,
                    claimed.run_id,
                    step,
                    "out",
                    b"x",
                    false,
                    10,
                    t(at),
                )
                .await
                .expect("artifact");
            if claimed.task.id == task.id {
                runs.push(claimed.run_id);
                let mut end = run_end(RunStatus::Completed, TaskStatus::Scheduled, at + 1);
                end.next_run_at = Some(t(at + 10));
                store
                    .finish_run(task.id, claimed.run_id, &end)
                    .await
                    .expect("finish");
            } else {
                complete(store, &claimed, at + 1).await;
            }
        }
    }
    let mut events: Vec<EventRecord> = (0..4)
        .map(|i| log_event(task.id, &format!("e{i}"), i * 10))
        .collect();
    events.push(log_event(single.id, "single", 0));
    store.append_events(&events).await.expect("events");
    // More old events than one delete batch takes.
    let many: Vec<EventRecord> = (0..1200)
        .map(|i| log_event(single.id, &format!("old {i}"), 1))
        .collect();
    store.append_events(&many).await.expect("many events");
    let running = claim_one(store, 30).await;

    let removed = store.prune(t(5)).await.expect("prune");
    assert_eq!(
        removed,
        1 + 2 + 1200,
        "the first recurring run; events e0, single's and the old ones"
    );
    let kept: Vec<i64> = store
        .list_runs(task.id, 10)
        .await
        .expect("runs")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(kept, [running.run_id, runs[2], runs[1]]);
    let artifact = |run| store.read_artifact(task.id, "out", Some(run));
    assert_eq!(
        artifact(runs[0]).await.expect("read"),
        None,
        "artifacts go with their run"
    );
    assert!(artifact(runs[1]).await.expect("read").is_some());
    assert_eq!(
        store.list_runs(single.id, 10).await.expect("runs").len(),
        1,
        "a task's latest run stays"
    );
    let left = store.list_events(task.id, false, 10).await.expect("events");
    let left: Vec<&str> = left.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(left, ["e1", "e2", "e3"]);

    let removed = store.prune(t(1000)).await.expect("prune everything old");
    assert_eq!(
        removed,
        2 + 3,
        "the finished runs but the latest, and every event"
    );
    let kept: Vec<i64> = store
        .list_runs(task.id, 10)
        .await
        .expect("runs")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(kept, [running.run_id], "a running run is never pruned");
    assert_eq!(store.list_runs(single.id, 10).await.expect("runs").len(), 1);
}

/// The log query behind the task logs page and the cross-task log view:
/// by task, run, level and time, paged by id either way.
pub(crate) async fn logs_filter_and_page(store: &dyn Store) {
    let first = create(store, new_task("first"), 0).await;
    let second = create(store, new_task("second"), 0).await;
    let line = |task_id: i64, run_id: i64, level: &str, message: &str, at: i64| EventRecord {
        run_id: Some(run_id),
        level: Some(level.into()),
        ..log_event(task_id, message, at)
    };
    let mut status = log_event(first.id, "not a log line", 1);
    status.kind = "task".into();
    store
        .append_events(&[
            status,
            line(first.id, 1, "info", "a", 2),
            line(second.id, 2, "warn", "b", 3),
            line(first.id, 3, "error", "c", 4),
            line(first.id, 3, "debug", "d", 5),
            line(second.id, 2, "error", "e", 6),
        ])
        .await
        .expect("append");
    let list = |query: LogQuery| async move {
        let logs = store.list_logs(&query).await.expect("list logs");
        logs.iter()
            .map(|l| l.event.message.clone())
            .collect::<Vec<_>>()
    };
    let all = LogQuery {
        limit: 100,
        ..LogQuery::default()
    };
    assert_eq!(
        list(all.clone()).await,
        ["a", "b", "c", "d", "e"],
        "only log lines, oldest first"
    );
    assert_eq!(
        list(LogQuery {
            newest_first: true,
            ..all.clone()
        })
        .await,
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        list(LogQuery {
            task_id: Some(first.id),
            ..all.clone()
        })
        .await,
        ["a", "c", "d"]
    );
    assert_eq!(
        list(LogQuery {
            task_id: Some(first.id),
            run_id: Some(3),
            ..all.clone()
        })
        .await,
        ["c", "d"]
    );
    assert_eq!(
        list(LogQuery {
            levels: vec!["warn".into(), "error".into()],
            ..all.clone()
        })
        .await,
        ["b", "c", "e"]
    );
    assert_eq!(
        list(LogQuery {
            since: Some(t(3)),
            until: Some(t(5)),
            ..all.clone()
        })
        .await,
        ["b", "c"],
        "since is inclusive, until exclusive"
    );

    // Paging by cursor: two lines a page, newest first, then oldest first.
    let page = LogQuery {
        newest_first: true,
        limit: 2,
        ..all.clone()
    };
    let newest = store.list_logs(&page).await.expect("page 1");
    assert_eq!(newest.len(), 2);
    assert!(newest[0].id > newest[1].id);
    assert_eq!(newest[0].event.kind, "log");
    let before = Some(newest[1].id);
    assert_eq!(
        list(LogQuery {
            before_id: before,
            ..page.clone()
        })
        .await,
        ["c", "b"]
    );
    let after = Some(newest[1].id);
    assert_eq!(
        list(LogQuery {
            after_id: after,
            ..all.clone()
        })
        .await,
        ["e"]
    );
    assert!(
        list(LogQuery {
            task_id: Some(second.id + 1000),
            ..all
        })
        .await
        .is_empty(),
        "an unknown task has no lines"
    );
}
