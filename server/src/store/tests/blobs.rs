//! Checkpoints, artifacts and modules: the byte payloads.

use super::*;

pub(crate) async fn checkpoints_round_trip(store: &dyn Store) {
    let task = create(store, with_steps(new_task("cp"), &["c/a", "c/b"]), 0).await;
    let (a, b) = (task.steps[0].id, task.steps[1].id);
    assert_eq!(store.load_checkpoint(task.id, a).await.expect("load"), None);
    let bytes: Vec<u8> = (0..=255).collect();
    store
        .save_checkpoint(task.id, a, &bytes, t(1))
        .await
        .expect("save");
    store
        .save_checkpoint(task.id, b, b"b", t(1))
        .await
        .expect("save");
    assert_eq!(
        store.load_checkpoint(task.id, a).await.expect("load"),
        Some(bytes)
    );
    store
        .save_checkpoint(task.id, a, b"newer", t(2))
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .load_checkpoint(task.id, a)
            .await
            .expect("load")
            .as_deref(),
        Some(&b"newer"[..])
    );
    // A run that ends lets the next fresh run start from nothing.
    let first = claim_one(store, 3).await;
    complete(store, &first, 4).await;
    assert!(
        store
            .load_checkpoint(task.id, a)
            .await
            .expect("load")
            .is_some()
    );
    store
        .run_task_now(task.id, None, t(5))
        .await
        .expect("run now");
    claim_one(store, 5).await;
    assert_eq!(store.load_checkpoint(task.id, a).await.expect("load"), None);
    assert_eq!(store.load_checkpoint(task.id, b).await.expect("load"), None);
}

pub(crate) async fn artifacts_append_and_cap(store: &dyn Store) {
    let task = create(store, new_task("art"), 0).await;
    let claimed = claim_one(store, 1).await;
    let (run, step) = (claimed.run_id, claimed.steps[0].step.id);
    let write = |name: &'static str, data: Vec<u8>, append: bool, at: i64| async move {
        store
            .write_artifact(task.id, run, step, name, &data, append, 600, t(at))
            .await
    };
    // Every byte value, NULs and invalid UTF-8 included, survives appending.
    let chunk: Vec<u8> = (0..=255).collect();
    write("dump.bin", chunk.clone(), true, 1)
        .await
        .expect("first chunk creates it");
    write("dump.bin", chunk.clone(), true, 2)
        .await
        .expect("append");
    let both = [chunk.clone(), chunk.clone()].concat();
    assert_eq!(
        store
            .read_artifact(task.id, "dump.bin", None)
            .await
            .expect("read"),
        Some(both.clone())
    );

    match write("dump.bin", chunk.clone(), true, 3).await {
        Err(StoreError::ArtifactOverCap(over)) => {
            assert_eq!(
                (over.name.as_str(), over.size, over.limit),
                ("dump.bin", 768, 600)
            );
            let message = over.to_string();
            assert!(
                message.contains("768") && message.contains("600"),
                "says size and limit: {message}"
            )
        }
        other => panic!("expected ArtifactOverCap, got {other:?}"),
    }
    assert_eq!(
        store
            .read_artifact(task.id, "dump.bin", None)
            .await
            .expect("read"),
        Some(both),
        "unchanged"
    );
    assert!(matches!(
        write("big.bin", vec![0; 601], false, 3).await,
        Err(StoreError::ArtifactOverCap(_))
    ));
    write("exact.bin", vec![7; 600], false, 3)
        .await
        .expect("exactly the limit is fine");

    write("dump.bin", b"replaced".to_vec(), false, 4)
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .read_artifact(task.id, "dump.bin", None)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"replaced"[..])
    );
    write("dump.bin", b"+more".to_vec(), true, 5)
        .await
        .expect("append after overwrite");
    assert_eq!(
        store
            .read_artifact(task.id, "dump.bin", None)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"replaced+more"[..])
    );

    let listed = store.list_artifacts(task.id).await.expect("list");
    let summary: Vec<(&str, i64, i64, Option<i64>)> = listed
        .iter()
        .map(|a| (a.name.as_str(), a.size, a.run_id, a.step_id))
        .collect();
    assert_eq!(
        summary,
        [
            ("dump.bin", 13, run, Some(step)),
            ("exact.bin", 600, run, Some(step))
        ]
    );
    assert_eq!(listed[0].created_at, t(1));
    assert_eq!(
        store
            .read_artifact(task.id, "missing", None)
            .await
            .expect("read"),
        None
    );
}

pub(crate) async fn artifacts_newest_run_first(store: &dyn Store) {
    let mut new = new_task("daily export");
    new.run_interval = 10;
    let task = create(store, new, 0).await;
    let mut runs = Vec::new();
    for (at, content) in [(0, "monday"), (10, "tuesday")] {
        let claimed = claim_one(store, at).await;
        let step = claimed.steps[0].step.id;
        store
            .write_artifact(
                task.id,
                claimed.run_id,
                step,
                "export.csv",
                content.as_bytes(),
                false,
                100,
                t(at),
            )
            .await
            .expect("write");
        let mut end = run_end(RunStatus::Completed, TaskStatus::Scheduled, at + 1);
        end.next_run_at = Some(t(at + 10));
        store
            .finish_run(task.id, claimed.run_id, &end)
            .await
            .expect("finish");
        runs.push(claimed.run_id);
    }
    let read = |run| store.read_artifact(task.id, "export.csv", run);
    assert_eq!(
        read(None).await.expect("read").as_deref(),
        Some(&b"tuesday"[..]),
        "newest run's"
    );
    assert_eq!(
        read(Some(runs[0])).await.expect("read").as_deref(),
        Some(&b"monday"[..])
    );
    assert_eq!(read(Some(runs[1] + 1000)).await.expect("read"), None);
    let listed: Vec<i64> = store
        .list_artifacts(task.id)
        .await
        .expect("list")
        .iter()
        .map(|a| a.run_id)
        .collect();
    assert_eq!(listed, [runs[1], runs[0]]);
}

pub(crate) async fn modules_register_and_activate(store: &dyn Store) {
    let (module, created) = store
        .put_module(
            "tool/backup",
            "hash-1",
            b"v1 bytes",
            Some("Python"),
            None,
            t(1),
        )
        .await
        .expect("put");
    assert!(created);
    assert_eq!(
        module,
        Module {
            path: "tool/backup".into(),
            hash: "hash-1".into(),
            size: 8,
            language: Some("Python".into()),
            active: true,
            created_at: t(1),
            updated_at: t(1),
            metadata: None,
            limits: ModuleLimits::default(),
        }
    );
    // The same bytes under another path are the same program: the language
    // is the blob's, kept when an upload does not say it.
    let (same, _) = store
        .put_module(
            "tool/copy-of-backup",
            "hash-1",
            b"v1 bytes",
            None,
            None,
            t(1),
        )
        .await
        .expect("put");
    assert_eq!(same.language.as_deref(), Some("Python"));
    store
        .delete_module("tool/copy-of-backup")
        .await
        .expect("delete");
    store
        .put_module("a/first", "hash-a", b"a", None, None, t(1))
        .await
        .expect("put");
    let off = store
        .set_module_active("tool/backup", false, t(2))
        .await
        .expect("deactivate");
    assert!(!off.active);
    assert_eq!(off.updated_at, t(2));

    let (module, created) = store
        .put_module("tool/backup", "hash-2", b"v2", None, None, t(3))
        .await
        .expect("re-register");
    assert!(!created);
    assert_eq!(
        (module.hash.as_str(), module.size, module.active),
        ("hash-2", 2, false),
        "keeps its active flag"
    );
    assert_eq!((module.created_at, module.updated_at), (t(1), t(3)));
    assert_eq!(
        store.get_module("tool/backup").await.expect("get"),
        Some(module)
    );
    assert_eq!(
        store
            .module_bytes("hash-1")
            .await
            .expect("old blob")
            .as_deref(),
        Some(&b"v1 bytes"[..])
    );
    assert_eq!(
        store
            .module_bytes("hash-2")
            .await
            .expect("new blob")
            .as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(store.module_bytes("nope").await.expect("no blob"), None);

    // Two paths may share one blob.
    store
        .put_module("tool/copy", "hash-2", b"v2", None, None, t(4))
        .await
        .expect("same bytes, other path");
    let paths: Vec<String> = store
        .list_modules()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.path)
        .collect();
    assert_eq!(paths, ["a/first", "tool/backup", "tool/copy"]);

    store.delete_module("tool/backup").await.expect("delete");
    assert_eq!(store.get_module("tool/backup").await.expect("get"), None);
    assert!(
        store
            .module_bytes("hash-1")
            .await
            .expect("pinned blob")
            .is_some(),
        "runs may have pinned it"
    );
    assert!(matches!(
        store.delete_module("tool/backup").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_module_active("tool/none", true, t(5)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn module_metadata_round_trips(store: &dyn Store) {
    let metadata = ModuleMetadata {
        title: Some("Backup".into()),
        description: None,
        version: Some("1.2.0".into()),
        // Not in alphabetical order: the fields' order is the author's.
        settings_schema: Some(
            serde_json::from_str(
                r#"{"type":"object","properties":{"target":{},"compress":{}},"required":["target"]}"#,
            )
            .expect("schema"),
        ),
    };
    let (module, _) = store
        .put_module("tool/backup", "hash-1", b"v1", None, Some(&metadata), t(1))
        .await
        .expect("put");
    assert_eq!(module.metadata.as_ref(), Some(&metadata));
    let listed = store.list_modules().await.expect("list");
    assert_eq!(listed[0].metadata.as_ref(), Some(&metadata));
    let text = serde_json::to_string(&listed[0].metadata).expect("JSON");
    assert!(
        text.find("target") < text.find("compress"),
        "the keys keep their order: {text}"
    );
    // A new version says what it says: no metadata replaces the old.
    let (module, created) = store
        .put_module("tool/backup", "hash-2", b"v2", None, None, t(2))
        .await
        .expect("re-register");
    assert!(!created);
    assert_eq!(module.metadata, None);
    assert_eq!(
        store.get_module("tool/backup").await.expect("get"),
        Some(module)
    );
}

pub(crate) async fn tasks_on_missing_modules_are_listed(store: &dyn Store) {
    store
        .put_module("m/here", "hash-here", b"here", None, None, t(1))
        .await
        .expect("put");
    let a = create(store, with_steps(new_task("a"), &["m/here", "m/gone"]), 2).await;
    let b = create(store, with_steps(new_task("b"), &["m/gone", "m/gone"]), 3).await;
    let c = create(store, with_steps(new_task("c"), &["m/here"]), 4).await;
    let pairs = |missing: Vec<MissingModuleTask>| -> Vec<(String, i64, String)> {
        missing
            .into_iter()
            .map(|m| {
                assert_eq!(m.task_status, TaskStatus::Scheduled);
                (m.module, m.task_id, m.task_name)
            })
            .collect()
    };
    let missing = store.missing_module_tasks(100).await.expect("missing");
    assert_eq!(
        pairs(missing),
        [
            ("m/gone".to_string(), a.id, "a".to_string()),
            ("m/gone".to_string(), b.id, "b".to_string()),
        ],
        "one row per task and module, however many steps"
    );

    store.delete_module("m/here").await.expect("delete");
    let missing = pairs(store.missing_module_tasks(100).await.expect("missing"));
    assert_eq!(missing.len(), 4);
    assert_eq!(
        missing[2..],
        [
            ("m/here".to_string(), a.id, "a".to_string()),
            ("m/here".to_string(), c.id, "c".to_string()),
        ]
    );
    let first = store.missing_module_tasks(1).await.expect("limited");
    assert_eq!(first.len(), 1, "the limit holds");
}
