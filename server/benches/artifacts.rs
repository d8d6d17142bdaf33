//! Artifact bench: `cargo bench -p stepwise --bench artifacts`.
//!
//! A step that writes a large artifact piece by piece calls
//! `artifact-write(name, bytes, append=true)` many times. This writes 64 MiB
//! in 64 KiB appends through the store (as the step host does), then reads it
//! back, and prints the time the appends took and how much the data
//! directory grew (the database, its WAL and anything else in it). An append
//! should cost what it adds: time and growth proportional to the artifact,
//! not to the artifact times the number of appends.
//!
//! `STEPWISE_BENCH_ARTIFACT_MIB` and `STEPWISE_BENCH_APPEND_KIB` change the
//! two sizes (defaults 64 and 64).

mod yardstick;

use chrono::Utc;
use std::path::Path;
use std::time::Instant;
use stepwise::store::{Durability, NewStep, NewTask, SqliteStore, Store};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list the data directory")
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            let meta = entry.metadata().expect("an entry's metadata");
            if meta.is_dir() {
                dir_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let total_mib = env_or("STEPWISE_BENCH_ARTIFACT_MIB", 64);
    let append_kib = env_or("STEPWISE_BENCH_APPEND_KIB", 64);
    let dir = tempfile::tempdir().expect("a temp dir");
    println!("{}\n", yardstick::Yardstick::measure(dir.path()));

    let store = SqliteStore::open(&dir.path().join("bench.db"), Durability::Full)
        .await
        .expect("open the store");
    let task = NewTask::new(
        "artifact bench",
        vec![NewStep::new("bench/artifact", serde_json::json!({}))],
    );
    let (task, _) = store
        .create_task(task, Utc::now())
        .await
        .expect("create the task");
    let now = Utc::now();
    let claimed = store
        .claim_due("bench", now, now + chrono::Duration::hours(1), 1)
        .await
        .expect("claim the task")
        .pop()
        .expect("the task is due");
    let step_id = claimed.steps[0].step.id;

    let piece: Vec<u8> = (0..append_kib * 1024).map(|i| (i % 251) as u8).collect();
    let appends = total_mib * 1024 / append_kib;
    let cap = i64::try_from(total_mib << 20).expect("a cap that fits");
    let before = dir_bytes(dir.path());
    let started = Instant::now();
    for _ in 0..appends {
        store
            .write_artifact(
                task.id,
                claimed.run_id,
                step_id,
                "dump.bin",
                &piece,
                true,
                cap,
                Utc::now(),
            )
            .await
            .expect("append");
    }
    let appending = started.elapsed();
    let grown = dir_bytes(dir.path()) - before;

    let started = Instant::now();
    // Read as a download streams it: chunk by chunk.
    let found = store
        .artifact_chunks(task.id, "dump.bin", None)
        .await
        .expect("find the artifact")
        .expect("the artifact exists");
    let mut read = Vec::new();
    for id in found.chunk_ids {
        read.extend(
            store
                .artifact_chunk(id)
                .await
                .expect("read a chunk")
                .expect("the chunk exists"),
        );
    }
    let reading = started.elapsed();
    assert_eq!(read.len(), appends * piece.len(), "every append is kept");
    assert!(
        read.chunks(piece.len()).all(|c| c == piece),
        "the artifact is the appends, in order"
    );

    println!(
        "| {total_mib} MiB in {appends} appends of {append_kib} KiB | appends {:.2} s ({:.2} ms each) \
         | data dir grew {:.0} MiB ({:.2}× the artifact) | read back {:.0} ms |",
        appending.as_secs_f64(),
        appending.as_secs_f64() * 1e3 / appends as f64,
        mib(grown),
        mib(grown) / total_mib as f64,
        reading.as_secs_f64() * 1e3,
    );
}
