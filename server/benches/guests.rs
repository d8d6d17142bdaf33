//! Python and JavaScript steps against a Rust one: `cargo bench -p stepwise --bench guests`.
//!
//! Prints, for the probe fixtures (`modules/python/fixture/probe`, `modules/js/fixture/probe`)
//! and the Rust `fixture/noop` / `fixture/sha256`: component size, first compile, load from
//! the disk cache, the per-run overhead of a trivial step (instantiate + call + teardown,
//! compiled code cached) and SHA-256 throughput as a CPU-bound step. The components are
//! built by the same helper as the tests (toolchains installed into the target dir).

#[path = "../../tests/common/guests.rs"]
mod guests;
#[path = "../../tests/common/skip.rs"]
mod skip;

use guests::{Lang, component};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::runtime::{
    LoadedModule, NullHost, Runtime, RuntimeConfig, StepContext, StepHost, StepLimits, StepRequest,
};
use tokio_util::sync::CancellationToken;

/// Runs per language for the per-run overhead (a Python run is milliseconds).
const RUNS: usize = 200;
/// MiB hashed by the CPU-bound step: SpiderMonkey interprets (no JIT in a component).
const MIB: u64 = 8;

fn rust_module(path: &str) -> Vec<u8> {
    let file = Path::new(env!("STEPWISE_BUILT_MODULES_DIR"))
        .join(format!("{}.wasm", path.replace('/', "__")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn request(settings: String) -> StepRequest {
    StepRequest {
        settings,
        limits: StepLimits {
            max_execution_time: Duration::from_secs(600),
            max_memory: 1 << 30,
        },
        context: StepContext::default(),
    }
}

async fn run(rt: &Runtime, module: &LoadedModule, settings: String) -> Duration {
    let host: Arc<dyn StepHost> = Arc::new(NullHost);
    let started = Instant::now();
    let report = rt
        .run(module, request(settings), host, CancellationToken::new())
        .await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    started.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Subject {
    name: &'static str,
    /// The trivial step and its settings.
    trivial: (Vec<u8>, &'static str),
    /// The CPU-bound step and its settings.
    cpu: (Vec<u8>, String),
}

#[tokio::main]
async fn main() {
    println!(
        "# Python and JavaScript steps ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let build = |lang| component(lang, "fixture/probe", "bench guests").expect("toolchains");
    let (python, js) = (build(Lang::Python), build(Lang::Js));
    let subjects = [
        Subject {
            name: "Rust",
            trivial: (rust_module("fixture/noop"), "{}"),
            cpu: (rust_module("fixture/sha256"), format!("{{\"mib\": {MIB}}}")),
        },
        Subject {
            name: "Python",
            trivial: (python.clone(), r#"{"mode": "noop"}"#),
            cpu: (python, format!("{{\"mode\": \"sha256\", \"mib\": {MIB}}}")),
        },
        Subject {
            name: "JavaScript",
            trivial: (js.clone(), r#"{"mode": "noop"}"#),
            cpu: (js, format!("{{\"mode\": \"sha256\", \"mib\": {MIB}}}")),
        },
    ];
    println!(
        "| step | size | first compile | load from cache | run, median | run, p99 | SHA-256 over {MIB} MiB |\n|---|---|---|---|---|---|---|"
    );
    for subject in subjects {
        let dir = tempfile::tempdir().unwrap();
        let first = Runtime::new(RuntimeConfig::local(dir.path().to_path_buf())).unwrap();
        let (bytes, settings) = &subject.trivial;
        let started = Instant::now();
        first.prepare(bytes).await.unwrap();
        let compile = started.elapsed();
        // A second runtime on the same cache directory loads instead of compiling.
        let rt = Runtime::new(RuntimeConfig::local(dir.path().to_path_buf())).unwrap();
        let started = Instant::now();
        let module = rt.prepare(bytes).await.unwrap();
        let load = started.elapsed();
        for _ in 0..RUNS / 10 {
            run(&rt, &module, settings.to_string()).await;
        }
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            times.push(run(&rt, &module, settings.to_string()).await);
        }
        times.sort();
        let (cpu_bytes, cpu_settings) = &subject.cpu;
        let cpu_module = rt.prepare(cpu_bytes).await.unwrap();
        let hashed = run(&rt, &cpu_module, cpu_settings.clone()).await;
        println!(
            "| {} | {:.1} MiB | {:.0} ms | {:.0} ms | {:.2} ms | {:.2} ms | {:.0} ms ({:.1} MiB/s) |",
            subject.name,
            bytes.len() as f64 / (1 << 20) as f64,
            ms(compile),
            ms(load),
            ms(times[RUNS / 2]),
            ms(times[RUNS * 99 / 100]),
            ms(hashed),
            MIB as f64 / hashed.as_secs_f64()
        );
    }
}
