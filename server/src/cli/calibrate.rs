//! `stepwise calibrate`: how many fuel units this machine burns in a second
//! of typical step code, the number `--fuel-per-second` wants.
//!
//! Fuel makes a step's verdict independent of load, but what a unit of fuel
//! is worth in time depends on the machine: the default was measured on the
//! reference machine, and on a core twice as fast a step gets half the time
//! its `max_execution_time` says. This runs the example `demo/count`
//! (branchy code with host calls, like most steps) in the sandbox for about
//! `--seconds` and prints the rate, as a line for the config file.

use crate::examples::EXAMPLE_MODULES;
use crate::runtime::{
    DEFAULT_FUEL_PER_SECOND, LoadedModule, NullHost, Runtime, RuntimeConfig, StepContext,
    StepLimits, StepRequest,
};
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The module measured: typical step code.
const MODULE: &str = "demo/count";
/// Numbers counted in the first, short run that sizes the next.
const PROBE_COUNT: u64 = 1_000_000;

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// About how long to measure, in seconds (0.1 to 60). Run it on an
    /// otherwise idle machine: a busy one measures less than its cores can do.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
}

pub async fn run(args: CalibrateArgs) -> anyhow::Result<ExitCode> {
    if !(0.1..=60.0).contains(&args.seconds) {
        anyhow::bail!("--seconds must be between 0.1 and 60, not {}", args.seconds);
    }
    let bytes = EXAMPLE_MODULES
        .iter()
        .find_map(|(path, bytes)| (*path == MODULE).then_some(*bytes))
        .context("the example module demo/count is missing from this build")?;
    // The same compile cache as `stepwise step run`.
    let runtime = Runtime::new(RuntimeConfig::local(super::step_run::compile_cache()))?;
    let module = runtime
        .prepare(bytes)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Short runs size the measured one (the first also warms the caches):
    // count more until a run lasts at least 80 % of the time asked for.
    let mut numbers = PROBE_COUNT;
    let (fuel, took) = loop {
        let (fuel, took) = count(&runtime, &module, numbers).await?;
        if took.as_secs_f64() >= 0.8 * args.seconds {
            break (fuel, took);
        }
        let scale = (args.seconds / took.as_secs_f64().max(1e-6)).min(100.0);
        numbers = (numbers as f64 * scale) as u64;
    };
    let rate = (fuel as f64 / took.as_secs_f64()) as u64;

    eprintln!(
        "{MODULE} counted {numbers} numbers in {:.2} s and burnt {fuel} fuel units: \
         {rate:.3e} a second on this machine (the default is {:.3e}; {:.2} s of work here per \
         second of max_execution_time with the default).",
        took.as_secs_f64(),
        DEFAULT_FUEL_PER_SECOND as f64,
        DEFAULT_FUEL_PER_SECOND as f64 / rate.max(1) as f64,
    );
    eprintln!(
        "Use it with `stepwise serve --fuel-per-second {rate}`, STEPWISE_FUEL_PER_SECOND, \
         or this line in the config file:"
    );
    println!("fuel_per_second = {rate}");
    Ok(ExitCode::SUCCESS)
}

/// Count to `numbers` in the sandbox; the fuel used and the time it took.
async fn count(
    runtime: &Runtime,
    module: &LoadedModule,
    numbers: u64,
) -> anyhow::Result<(u64, Duration)> {
    let request = StepRequest {
        settings: serde_json::json!({ "to": numbers }).to_string(),
        limits: StepLimits {
            // Generous: calibration must not be stopped by the rate it measures.
            max_execution_time: Duration::from_secs(3600),
            max_memory: 64 << 20,
        },
        context: StepContext {
            task_id: 0,
            run_id: 0,
            step_id: 0,
            attempt: 1,
            details: serde_json::json!({}),
        },
    };
    let started = Instant::now();
    let report = runtime
        .run(
            module,
            request,
            Arc::new(NullHost),
            CancellationToken::new(),
        )
        .await;
    let took = started.elapsed();
    anyhow::ensure!(
        report.outcome.is_success(),
        "{MODULE} did not complete: {:?}",
        report.outcome
    );
    Ok((report.fuel_used, took))
}
