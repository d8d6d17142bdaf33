//! Artifacts written in many appends: stored as chunks, read back whole or
//! chunk by chunk, capped before anything is written, carried into a
//! resuming run.

use super::*;

/// A task claimed once: its id, run and step.
async fn claimed_run(store: &dyn Store) -> (i64, i64, i64) {
    let task = create(store, new_task("dump"), 0).await;
    let claimed = claim_one(store, 1).await;
    (task.id, claimed.run_id, claimed.steps[0].step.id)
}

/// The `i`th append: 1 KiB of bytes that differ from every other append's.
fn piece(i: usize) -> Vec<u8> {
    (0..1024).map(|j| ((i * 7 + j) % 256) as u8).collect()
}

pub(crate) async fn artifact_appends_read_back_in_order(store: &dyn Store) {
    let (task, run, step) = claimed_run(store).await;
    let appends = 40;
    for i in 0..appends {
        store
            .write_artifact(task, run, step, "dump.bin", &piece(i), true, 1 << 20, t(2))
            .await
            .expect("append");
    }
    let whole: Vec<u8> = (0..appends).flat_map(piece).collect();
    assert_eq!(
        store
            .read_artifact(task, "dump.bin", None)
            .await
            .expect("read"),
        Some(whole.clone()),
        "the appends, concatenated in order"
    );
    let listed = store.list_artifacts(task).await.expect("list");
    assert_eq!(listed[0].size, whole.len() as i64);

    // Chunk by chunk (a streaming download): each append is one chunk.
    let chunks = store
        .artifact_chunks(task, "dump.bin", None)
        .await
        .expect("chunks")
        .expect("the artifact exists");
    assert_eq!(chunks.size, whole.len() as i64);
    assert_eq!(chunks.chunk_ids.len(), appends, "one chunk per append");
    let mut streamed = Vec::new();
    for id in &chunks.chunk_ids {
        streamed.extend(
            store
                .artifact_chunk(*id)
                .await
                .expect("chunk")
                .expect("present"),
        );
    }
    assert_eq!(streamed, whole);

    // An overwrite drops the old chunks: a download still holding their
    // ids finds them gone, never someone else's bytes.
    store
        .write_artifact(task, run, step, "dump.bin", b"fresh", false, 1 << 20, t(3))
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .artifact_chunk(chunks.chunk_ids[0])
            .await
            .expect("chunk"),
        None
    );
    store
        .write_artifact(
            task,
            run,
            step,
            "other.bin",
            b"another",
            true,
            1 << 20,
            t(3),
        )
        .await
        .expect("another artifact");
    for id in &chunks.chunk_ids {
        assert_eq!(
            store.artifact_chunk(*id).await.expect("chunk"),
            None,
            "chunk ids are never reused"
        );
    }
    assert_eq!(
        store
            .read_artifact(task, "dump.bin", None)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"fresh"[..])
    );

    // Empty writes: an artifact of no bytes exists, and reads back empty.
    store
        .write_artifact(task, run, step, "empty.txt", b"", true, 1 << 20, t(4))
        .await
        .expect("empty");
    assert_eq!(
        store
            .read_artifact(task, "empty.txt", None)
            .await
            .expect("read"),
        Some(Vec::new())
    );
    assert_eq!(
        store
            .artifact_chunks(task, "missing", None)
            .await
            .expect("chunks"),
        None
    );
}

pub(crate) async fn artifact_cap_is_checked_before_writing(store: &dyn Store) {
    let (task, run, step) = claimed_run(store).await;
    let write = |data: Vec<u8>, append: bool| async move {
        store
            .write_artifact(task, run, step, "out.csv", &data, append, 100, t(2))
            .await
    };
    write(vec![b'a'; 60], true).await.expect("under the cap");
    let over = |result: StoreResult<()>| match result {
        Err(StoreError::ArtifactOverCap(over)) => over,
        other => panic!("expected ArtifactOverCap, got {other:?}"),
    };
    // An append that would pass the cap is refused whole: no part of it lands.
    let refused = over(write(vec![b'b'; 41], true).await);
    assert_eq!(
        refused,
        ArtifactOverCap {
            name: "out.csv".into(),
            size: 101,
            limit: 100
        }
    );
    assert!(refused.to_string().contains("100 bytes"), "{refused}");
    // An overwrite that would pass it leaves the old content, not nothing.
    over(write(vec![b'c'; 101], false).await);
    let kept = store
        .read_artifact(task, "out.csv", None)
        .await
        .expect("read")
        .expect("still there");
    assert_eq!(kept, vec![b'a'; 60]);
    let chunks = store
        .artifact_chunks(task, "out.csv", None)
        .await
        .expect("chunks")
        .expect("still there");
    assert_eq!((chunks.size, chunks.chunk_ids.len()), (60, 1));
    // Up to the cap exactly is fine.
    write(vec![b'd'; 40], true).await.expect("exactly the cap");
    assert_eq!(store.list_artifacts(task).await.expect("list")[0].size, 100);
}

pub(crate) async fn artifacts_are_carried_into_a_resuming_run(store: &dyn Store) {
    let task = create(store, new_task("resumable dump"), 0).await;
    let first = claim_one(store, 1).await;
    let step = first.steps[0].step.id;
    for part in [&b"rows 1-100;"[..], b"rows 101-200;"] {
        store
            .write_artifact(
                task.id,
                first.run_id,
                step,
                "dump.sql",
                part,
                true,
                1 << 20,
                t(2),
            )
            .await
            .expect("append");
    }
    let end = retry_end(RunStatus::Failed, 3, 10, 1);
    assert!(
        store
            .finish_run(task.id, first.run_id, &end)
            .await
            .expect("finish")
    );

    let retry = claim_one(store, 10).await;
    store
        .write_artifact(
            task.id,
            retry.run_id,
            step,
            "dump.sql",
            b"rows 201-300;",
            true,
            1 << 20,
            t(11),
        )
        .await
        .expect("append in the retry");
    assert_eq!(
        store
            .read_artifact(task.id, "dump.sql", Some(retry.run_id))
            .await
            .expect("read")
            .as_deref(),
        Some(&b"rows 1-100;rows 101-200;rows 201-300;"[..]),
        "the retry continues the dump"
    );
    assert_eq!(
        store
            .read_artifact(task.id, "dump.sql", Some(first.run_id))
            .await
            .expect("read")
            .as_deref(),
        Some(&b"rows 1-100;rows 101-200;"[..]),
        "the first run's artifact is unchanged"
    );
}
