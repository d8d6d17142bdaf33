//! Calibration benchmark: `cargo bench -p stepwise --bench calibration`.
//!
//! How far from its `max_execution_time` a step stops once fuel is
//! calibrated on this machine. Measures the rate as `stepwise calibrate` does
//! (2 s of `demo/count`) and as the first start of `serve` does (0.3 s,
//! several times, for its spread), then runs three kinds of code under a
//! budget of [`BUDGET_SECONDS`] at the calibrated rate until the fuel runs
//! out: `demo/count` (the calibration's own kind), `fixture/loop` (a tight
//! loop) and `fixture/sha256` (straight-line hashing). A budget is CPU time
//! (as the calibration is): each run's CPU time is what is compared with it;
//! the wall time is printed too, and matches on an idle machine.

mod yardstick;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::calibration::{self, FIRST_START_SECONDS};
use stepwise::runtime::{
    NullHost, Runtime, RuntimeConfig, StepContext, StepLimits, StepOutcome, StepRequest,
};
use tokio_util::sync::CancellationToken;

/// The budget each step gets, in seconds of `max_execution_time`.
const BUDGET_SECONDS: f64 = 3.0;
/// Runs of each module under the budget.
const RUNS: usize = 3;
/// Short calibrations, as at a first start, to show their spread.
const FIRST_STARTS: usize = 5;

fn module(path: &str) -> Vec<u8> {
    let file = Path::new(env!("STEPWISE_BUILT_MODULES_DIR"))
        .join(format!("{}.wasm", path.replace('/', "__")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// CPU and wall time of one step that runs until its fuel budget is spent,
/// and whether fuel stopped it (on a busy machine the wall-clock backstop,
/// `2 × budget + 1 s`, can come first).
async fn time_to_budget(
    runtime: &Runtime,
    path: &str,
    settings: &str,
) -> (Duration, Duration, bool) {
    let loaded = runtime.prepare(&module(path)).await.unwrap();
    let request = StepRequest {
        settings: settings.into(),
        limits: StepLimits {
            max_execution_time: Duration::from_secs_f64(BUDGET_SECONDS),
            max_memory: 64 << 20,
        },
        context: StepContext::default(),
    };
    let cpu = calibration::cpu_time();
    let started = Instant::now();
    let report = runtime
        .run(
            &loaded,
            request,
            Arc::new(NullHost),
            CancellationToken::new(),
        )
        .await;
    let (cpu, wall) = (calibration::cpu_time() - cpu, started.elapsed());
    match report.outcome {
        StepOutcome::OutOfFuel { .. } => (cpu, wall, true),
        StepOutcome::Deadline { .. } => (cpu, wall, false),
        other => panic!("{path} must run out of fuel, not {other:?}"),
    }
}

#[tokio::main]
async fn main() {
    println!(
        "# Stepwise calibration benchmark ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let probe = tempfile::tempdir().unwrap();
    println!("{}\n", yardstick::Yardstick::measure(probe.path()));
    let cache = tempfile::tempdir().unwrap();

    let full = calibration::measure(cache.path(), 2.0).await.unwrap();
    let mut quick = Vec::new();
    for _ in 0..FIRST_STARTS {
        let started = Instant::now();
        let measured = calibration::measure(cache.path(), FIRST_START_SECONDS)
            .await
            .unwrap();
        quick.push((measured.fuel_per_second, started.elapsed()));
    }
    quick.sort();
    println!("| calibration | fuel units/s | took (CPU) |\n|---|---|---|");
    println!(
        "| `stepwise calibrate` (2 s of demo/count) | {:.3e} | {:.2} s |",
        full.fuel_per_second as f64, full.measured_seconds
    );
    let (low, high) = (quick[0], quick[quick.len() - 1]);
    println!(
        "| first start of `serve` ({FIRST_START_SECONDS} s), {FIRST_STARTS} times | {:.3e} – {:.3e} ({:+.1} % – {:+.1} % of the above) | {:.2} – {:.2} s wall, probe included |",
        low.0 as f64,
        high.0 as f64,
        percent_off(low.0, full.fuel_per_second),
        percent_off(high.0, full.fuel_per_second),
        quick.iter().map(|q| q.1).min().unwrap().as_secs_f64(),
        quick.iter().map(|q| q.1).max().unwrap().as_secs_f64(),
    );

    let mut config = RuntimeConfig::local(cache.path().to_path_buf());
    config.fuel_per_second = full.fuel_per_second;
    let runtime = Runtime::new(config).unwrap();
    println!(
        "\n| {BUDGET_SECONDS} s budget at {:.3e} units/s, {RUNS} runs | stopped after (CPU) | off its budget | wall | stopped by the backstop |\n|---|---|---|---|---|",
        full.fuel_per_second as f64
    );
    for (path, settings) in [
        ("demo/count", r#"{"to": 18446744073709551615}"#),
        ("fixture/loop", "{}"),
        ("fixture/sha256", r#"{"mib": 1000000}"#),
    ] {
        let mut cpu = Vec::with_capacity(RUNS);
        let mut wall = Vec::with_capacity(RUNS);
        let mut backstop = 0;
        for _ in 0..RUNS {
            let (on_cpu, on_clock, by_fuel) = time_to_budget(&runtime, path, settings).await;
            cpu.push(on_cpu);
            wall.push(on_clock);
            backstop += usize::from(!by_fuel);
        }
        cpu.sort();
        wall.sort();
        let seconds = |d: Duration| d.as_secs_f64();
        let off = |d: Duration| (seconds(d) / BUDGET_SECONDS - 1.0) * 100.0;
        println!(
            "| {path} | {:.2} – {:.2} s | {:+.1} % – {:+.1} % | {:.2} – {:.2} s | {backstop} of {RUNS} |",
            seconds(cpu[0]),
            seconds(cpu[RUNS - 1]),
            off(cpu[0]),
            off(cpu[RUNS - 1]),
            seconds(wall[0]),
            seconds(wall[RUNS - 1]),
        );
    }
}

fn percent_off(rate: u64, reference: u64) -> f64 {
    (rate as f64 / reference as f64 - 1.0) * 100.0
}
