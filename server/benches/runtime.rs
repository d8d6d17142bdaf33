//! Runtime benchmark: `cargo bench -p stepwise --bench runtime`.
//!
//! Prints a table of: the overhead of one trivial step (instantiate + call +
//! teardown, compiled code cached), first compile and cache-load time of each
//! example module, a CPU-bound step (SHA-256 over 64 MiB in the guest) against
//! the same Rust code compiled natively with fuel on and off, fuel per second,
//! and cancel latency. Ratios within one run are what to compare.

mod yardstick;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::runtime::{
    NullHost, Runtime, RuntimeConfig, StepContext, StepHost, StepLimits, StepOutcome, StepRequest,
};
use tokio_util::sync::CancellationToken;

fn module(path: &str) -> Vec<u8> {
    let file = Path::new(env!("STEPWISE_BUILT_MODULES_DIR"))
        .join(format!("{}.wasm", path.replace('/', "__")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn runtime(fuel: bool) -> Runtime {
    let mut config = RuntimeConfig::local(tempfile::tempdir().unwrap().keep());
    config.consume_fuel = fuel;
    Runtime::new(config).unwrap()
}

fn request(settings: &str, seconds: u64) -> StepRequest {
    StepRequest {
        settings: settings.to_string(),
        limits: StepLimits {
            max_execution_time: Duration::from_secs(seconds),
            max_memory: 1 << 30,
        },
        context: StepContext::default(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let host: Arc<dyn StepHost> = Arc::new(NullHost);
    println!(
        "# Stepwise runtime benchmark ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let probe = tempfile::tempdir().unwrap();
    println!("{}\n", yardstick::Yardstick::measure(probe.path()));

    // 1. One trivial step.
    let rt = runtime(true);
    let noop = rt.prepare(&module("fixture/noop")).await.unwrap();
    for _ in 0..500 {
        rt.run(
            &noop,
            request("{}", 10),
            host.clone(),
            CancellationToken::new(),
        )
        .await;
    }
    let mut times = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let started = Instant::now();
        let report = rt
            .run(
                &noop,
                request("{}", 10),
                host.clone(),
                CancellationToken::new(),
            )
            .await;
        times.push(started.elapsed());
        assert!(report.outcome.is_success());
    }
    times.sort();
    println!(
        "| trivial step (instantiate + call + teardown, cached) | median {:.1} µs | p99 {:.1} µs |",
        micros(percentile(&times, 0.5)),
        micros(percentile(&times, 0.99))
    );

    // 2. Compile and cache-load times of the example modules.
    println!("\n| module | size | first compile | load from disk cache |\n|---|---|---|---|");
    for path in [
        "demo/count",
        "tool/backup/dumptables",
        "sale/contact/send",
        "catalog/product/import",
    ] {
        let bytes = module(path);
        let fresh = runtime(true);
        let started = Instant::now();
        fresh.prepare(&bytes).await.unwrap();
        let compile = started.elapsed();
        // A second runtime on the same cache directory loads instead of compiling.
        let dir = tempfile::tempdir().unwrap().keep();
        let first = Runtime::new(RuntimeConfig::local(dir.clone())).unwrap();
        first.prepare(&bytes).await.unwrap();
        let second = Runtime::new(RuntimeConfig::local(dir)).unwrap();
        let started = Instant::now();
        second.prepare(&bytes).await.unwrap();
        let load = started.elapsed();
        println!(
            "| {path} | {} KiB | {:.1} ms | {:.2} ms |",
            bytes.len() / 1024,
            compile.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3
        );
    }

    // 3. CPU-bound: SHA-256 over 64 MiB.
    let mib = 64;
    let started = Instant::now();
    let native_digest = yardstick::native_sha256(mib);
    let native = started.elapsed();
    let mut guest = Vec::new();
    for fuel in [false, true] {
        let rt = runtime(fuel);
        let sha = rt.prepare(&module("fixture/sha256")).await.unwrap();
        let settings = format!("{{\"mib\": {mib}}}");
        rt.run(
            &sha,
            request(&settings, 600),
            host.clone(),
            CancellationToken::new(),
        )
        .await;
        let started = Instant::now();
        let report = rt
            .run(
                &sha,
                request(&settings, 600),
                host.clone(),
                CancellationToken::new(),
            )
            .await;
        let elapsed = started.elapsed();
        match &report.outcome {
            StepOutcome::Completed { output } => {
                assert_eq!(output["digest"], native_digest.as_str(), "same computation")
            }
            other => panic!("{other:?}"),
        }
        guest.push((fuel, elapsed, report.fuel_used));
    }
    println!("\n| SHA-256 over {mib} MiB | time | × native |\n|---|---|---|");
    println!(
        "| native (same Rust code, portable sha2) | {:.0} ms | 1.00 |",
        native.as_secs_f64() * 1e3
    );
    for (fuel, elapsed, _) in &guest {
        println!(
            "| wasm, fuel {} | {:.0} ms | {:.2} |",
            if *fuel { "on" } else { "off" },
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() / native.as_secs_f64()
        );
    }

    // 4. Fuel per second, on straight-line (SHA-256) and branchy (demo/count) code.
    let (_, sha_time, sha_fuel) = guest[1];
    let rt = runtime(true);
    let count = rt.prepare(&module("demo/count")).await.unwrap();
    let started = Instant::now();
    let report = rt
        .run(
            &count,
            request("{\"to\": 20000000}", 600),
            host.clone(),
            CancellationToken::new(),
        )
        .await;
    let count_time = started.elapsed();
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    println!("\n| fuel per second | units/s |\n|---|---|");
    println!(
        "| SHA-256 (straight-line) | {:.2e} |",
        sha_fuel as f64 / sha_time.as_secs_f64()
    );
    println!(
        "| demo/count (branchy, host calls) | {:.2e} |",
        report.fuel_used as f64 / count_time.as_secs_f64()
    );

    // 5. Cancel latency of a busy guest.
    let endless = rt.prepare(&module("fixture/loop")).await.unwrap();
    let mut latencies = Vec::new();
    for _ in 0..30 {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let run = rt.run(&endless, request("{}", 600), host.clone(), cancel);
        let timer = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.cancel();
            Instant::now()
        };
        let (report, cancelled_at) = tokio::join!(run, timer);
        latencies.push(cancelled_at.elapsed());
        assert_eq!(report.outcome, StepOutcome::Cancelled);
    }
    latencies.sort();
    println!(
        "\n| cancel latency (busy guest) | p50 {:.1} ms | max {:.1} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}
