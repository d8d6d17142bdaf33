//! Engine benchmark: `cargo bench -p stepwise --bench engine`.
//!
//! Throughput of one-step no-op tasks and of 10-step tasks through the whole
//! engine (claim, run in the sandbox, record, end) on SQLite with durable
//! commits, and the delay from `start_at` to the step starting with 1,000
//! tasks queued; and how long another writer (a task created every 10 ms)
//! waits while the engine keeps the writer busy, and what that costs it.

mod yardstick;

use chrono::Utc;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stepwise::engine::{Engine, EngineConfig};
use stepwise::events::EventBus;
use stepwise::runtime::{Runtime, RuntimeConfig};
use stepwise::secrets::SecretBox;
use stepwise::store::{
    Durability, NewStep, NewTask, SqliteStore, Store, TaskFilter, TaskStatus, WriterTime,
};

fn module(path: &str) -> Vec<u8> {
    let file = Path::new(env!("STEPWISE_BUILT_MODULES_DIR"))
        .join(format!("{}.wasm", path.replace('/', "__")));
    std::fs::read(file).unwrap()
}

fn new_task(steps: usize, start_at: Option<chrono::DateTime<Utc>>) -> NewTask {
    let steps = (0..steps)
        .map(|_| NewStep {
            max_execution_time: 10,
            ..NewStep::new("fixture/noop", serde_json::json!({}))
        })
        .collect();
    NewTask {
        start_at,
        ..NewTask::new("bench", steps)
    }
}

async fn setup(durability: Durability) -> (Engine, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("bench.db"), durability)
            .await
            .unwrap(),
    );
    let runtime =
        Arc::new(Runtime::new(RuntimeConfig::local(dir.path().join("compiled"))).unwrap());
    let bytes = module("fixture/noop");
    let loaded = runtime.prepare(&bytes).await.unwrap();
    store
        .put_module(
            "fixture/noop",
            loaded.hash(),
            &bytes,
            Some("Rust"),
            None,
            Utc::now(),
        )
        .await
        .unwrap();
    let mut config = EngineConfig::new("bench");
    config.workers = std::env::var("STEPWISE_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(128);
    config.claim_batch = config.workers as i64;
    config.poll_interval = Duration::from_millis(5);
    let engine = Engine::new(
        store.clone(),
        runtime,
        Arc::new(EventBus::new()),
        Arc::new(SecretBox::from_key(&[0; 32])),
        config,
    );
    (engine, store, dir)
}

/// Until no task is scheduled or running: two index probes, so polling does
/// not take CPU from the engine being measured.
async fn wait_all_done(store: &Arc<dyn Store>) {
    let left = |status| {
        let store = store.clone();
        async move {
            let filter = TaskFilter {
                status: Some(status),
                limit: 1,
                ..TaskFilter::default()
            };
            !store.list_tasks(&filter).await.unwrap().is_empty()
        }
    };
    while left(TaskStatus::Scheduled).await || left(TaskStatus::Running).await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tasks/s and steps/s; with `writes_meanwhile`, also the waits of a task
/// created every 10 ms while they run (ms, sorted).
async fn throughput(
    tasks: usize,
    steps: usize,
    durability: Durability,
    writes_meanwhile: bool,
) -> (f64, f64, Vec<f64>) {
    let (engine, store, _dir) = setup(durability).await;
    for chunk in 0..tasks.div_ceil(1_000) {
        let count = (tasks - chunk * 1_000).min(1_000);
        let batch = (0..count).map(|_| new_task(steps, None)).collect();
        for created in store.create_tasks(batch, Utc::now()).await.unwrap() {
            created.unwrap();
        }
    }
    eprintln!("created {tasks} {steps}-step tasks; running them");
    let cpu_before = process_cpu_seconds();
    let writer_before = WriterTime::now();
    let started = Instant::now();
    let handle = engine.start();
    let busy = Arc::new(AtomicBool::new(writes_meanwhile));
    let writes = tokio::spawn(write_while_busy(store.clone(), busy.clone()));
    wait_all_done(&store).await;
    let elapsed = started.elapsed().as_secs_f64();
    busy.store(false, Ordering::Relaxed);
    let mut waits = writes.await.unwrap();
    waits.sort_by(f64::total_cmp);
    let cpu = process_cpu_seconds() - cpu_before;
    let writer = WriterTime::now().since(writer_before);
    handle.shutdown().await;
    // Every task ran to success: a throughput of failures would be no figure.
    let counts = store.count_by_status().await.unwrap();
    assert!(
        counts.contains(&(TaskStatus::Completed, tasks as i64)),
        "not every task completed: {counts:?}"
    );
    eprintln!(
        "ran them in {elapsed:.2} s using {cpu:.2} s of CPU ({:.0} µs per task)",
        cpu * 1e6 / tasks as f64
    );
    // The one writer connection bounds the throughput: how much of the wall
    // time it was held, and by what.
    let share = |d: Duration| 100.0 * d.as_secs_f64() / elapsed;
    eprintln!(
        "writer held {:.0} % of the time: claims {:.0} %, write batches {:.0} % \
         (COMMITs of both {:.0} %) in {} transactions, {} holds; per task {:.1} µs held, \
         {:.1} µs of it claiming",
        share(writer.held),
        share(writer.claims),
        share(writer.held.saturating_sub(writer.claims)),
        share(writer.commits),
        writer.transactions,
        writer.holds,
        writer.held.as_secs_f64() * 1e6 / tasks as f64,
        writer.claims.as_secs_f64() * 1e6 / tasks as f64
    );
    (
        tasks as f64 / elapsed,
        (tasks * steps) as f64 / elapsed,
        waits,
    )
}

/// Create a disabled task (never claimed) every 10 ms while `busy`: how
/// long one write waits for the writer the engine keeps busy, in ms.
async fn write_while_busy(store: Arc<dyn Store>, busy: Arc<AtomicBool>) -> Vec<f64> {
    let mut waits = Vec::new();
    while busy.load(Ordering::Relaxed) {
        let task = NewTask {
            disabled: true,
            ..new_task(1, None)
        };
        let started = Instant::now();
        store.create_task(task, Utc::now()).await.unwrap();
        waits.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    waits
}

/// User plus system CPU time of this process so far (Linux `/proc`).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the
    // 12th and stime the 13th of them, in clock ticks (100 per second).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
}

#[tokio::main]
async fn main() {
    // STEPWISE_BENCH_TRACE=sqlx=debug logs every statement with its time.
    if let Ok(filter) = std::env::var("STEPWISE_BENCH_TRACE") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# Stepwise engine benchmark ({cores} cores, SQLite WAL)\n");
    let probe = tempfile::tempdir().unwrap();
    println!("{}\n", yardstick::Yardstick::measure(probe.path()));
    println!("| workload | synchronous | tasks/s | steps/s |\n|---|---|---|---|");
    // STEPWISE_BENCH_QUICK=1: the one-step FULL workload alone, to compare
    // builds in turn (the writer's time per task is what a store change moves).
    if std::env::var_os("STEPWISE_BENCH_QUICK").is_some() {
        let (tasks, steps, _) = throughput(20_000, 1, Durability::Full, false).await;
        println!("| 20,000 one-step no-op tasks | FULL | {tasks:.0} | {steps:.0} |");
        return;
    }
    for (durability, name) in [(Durability::Full, "FULL"), (Durability::Normal, "NORMAL")] {
        let (tasks, steps, _) = throughput(20_000, 1, durability, false).await;
        println!("| 20,000 one-step no-op tasks | {name} | {tasks:.0} | {steps:.0} |");
        let (tasks, steps, _) = throughput(2_000, 10, durability, false).await;
        println!("| 2,000 ten-step no-op tasks | {name} | {tasks:.0} | {steps:.0} |");
    }

    // Other writers (API requests) wait while the engine's writer holds the
    // connection (up to 10 ms per hold, see `engine/committer.rs`).
    let (tasks, _, waits) = throughput(20_000, 1, Durability::Full, true).await;
    println!(
        "| 20,000 one-step no-op tasks, a task created every 10 ms meanwhile | FULL | {tasks:.0} | {tasks:.0} |"
    );
    if let Some(max) = waits.last() {
        let p = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
        println!(
            "\n| a task created while the engine is busy ({} creates, 10 ms apart) | p50 {:.1} ms | p99 {:.1} ms | max {max:.1} ms |",
            waits.len(),
            p(0.5),
            p(0.99),
        );
    }

    // Latency from start_at to the step starting, with 1,000 tasks queued.
    let (engine, store, _dir) = setup(Durability::Full).await;
    let base = Utc::now() + chrono::Duration::seconds(3);
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let start_at = base + chrono::Duration::milliseconds(i * 3);
        ids.push((
            store
                .create_task(new_task(1, Some(start_at)), Utc::now())
                .await
                .unwrap()
                .0
                .id,
            start_at,
        ));
    }
    let handle = engine.start();
    wait_all_done(&store).await;
    handle.shutdown().await;
    let mut delays = Vec::new();
    for (id, start_at) in ids {
        let run = &store.list_runs(id, 1).await.unwrap()[0];
        let started = run.steps[0].started_at.unwrap();
        delays.push((started - start_at).num_microseconds().unwrap() as f64 / 1000.0);
    }
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "\n| start_at → step start, 1,000 queued (3 ms apart) | p50 {:.1} ms | p99 {:.1} ms |",
        p(0.5),
        p(0.99)
    );
}
