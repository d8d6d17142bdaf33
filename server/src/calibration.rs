//! What a second of `max_execution_time` is worth in fuel on this machine.
//!
//! A step's time limit is a fuel budget (`seconds × fuel_per_second`) so that
//! its verdict does not depend on load; but how much fuel a core burns in a
//! second depends on the core. So the rate is measured on the machine itself:
//! briefly at the first start of `serve`, kept in the data directory as
//! `calibration.json` and reused by later starts; `stepwise calibrate`
//! measures again, for longer, and rewrites the file. An explicit
//! `fuel_per_second` setting wins over both.
//!
//! The measured code is the example `demo/count`: branchy, with host calls,
//! like most steps. Code of another kind burns fuel at another rate (see
//! BENCHMARKS.md, "Calibration"). The rate is fuel per second of CPU time the
//! process used, not of wall time: on a busy machine a step gets less than a
//! core, and a wall-clock measurement would then understate what a core does.

use crate::examples::EXAMPLE_MODULES;
use crate::runtime::{
    Compiler, LoadedModule, NullHost, PoolSizing, Runtime, RuntimeConfig, StepContext, StepLimits,
    StepRequest,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The file in the data directory.
pub const FILE_NAME: &str = "calibration.json";

/// The module measured: typical step code.
pub const MODULE: &str = "demo/count";

/// How long the first start of `serve` measures: short, since it delays that
/// start; `stepwise calibrate` measures longer.
pub const FIRST_START_SECONDS: f64 = 0.3;

/// Numbers counted in the first, short run that sizes the next.
const PROBE_COUNT: u64 = 1_000_000;

/// One measurement, as kept in `calibration.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Fuel units this machine burns per second of `MODULE`.
    pub fuel_per_second: u64,
    pub module: String,
    /// CPU time of the measured run.
    pub measured_seconds: f64,
    pub measured_at: DateTime<Utc>,
}

/// Where the calibration of a data directory is kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The kept calibration; `None` when there is none or it cannot be read (it
/// is then measured again).
pub fn load(data_dir: &Path) -> Option<Calibration> {
    let path = path(data_dir);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<Calibration>(&text) {
        Ok(calibration) if calibration.fuel_per_second > 0 => Some(calibration),
        _ => {
            tracing::warn!("{} is not a calibration; measuring again", path.display());
            None
        }
    }
}

/// Keep a calibration in the data directory (written whole, then renamed).
pub fn save(data_dir: &Path, calibration: &Calibration) -> anyhow::Result<()> {
    let path = path(data_dir);
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(calibration)? + "\n";
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
}

/// The kept calibration of the data directory, or a new short one, kept.
pub async fn load_or_measure(data_dir: &Path) -> anyhow::Result<Calibration> {
    if let Some(calibration) = load(data_dir) {
        return Ok(calibration);
    }
    let calibration = measure(&data_dir.join("compiled"), FIRST_START_SECONDS).await?;
    save(data_dir, &calibration)?;
    tracing::info!(
        "calibrated: {:.3e} fuel units a second on this machine, kept in {} (`stepwise calibrate` measures longer)",
        calibration.fuel_per_second as f64,
        path(data_dir).display()
    );
    Ok(calibration)
}

/// Run `MODULE` for about `seconds` and say how much fuel it burnt a second.
/// Compiled code is cached in `cache_dir`.
pub async fn measure(cache_dir: &Path, seconds: f64) -> anyhow::Result<Calibration> {
    let bytes = EXAMPLE_MODULES
        .iter()
        .find_map(|(path, bytes)| (*path == MODULE).then_some(*bytes))
        .with_context(|| format!("the example module {MODULE} is missing from this build"))?;
    // A sandbox of its own, for one step at a time: the module is ours, so it
    // is compiled in process.
    let runtime = Runtime::new(RuntimeConfig {
        pool: PoolSizing {
            max_instances: 1,
            max_memory_bytes: 64 << 20,
        },
        compiler: Compiler::InProcess,
        ..RuntimeConfig::local(cache_dir.to_path_buf())
    })?;
    let module = runtime
        .prepare(bytes)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Short runs size the measured one (the first also warms the caches):
    // count more until a run lasts at least 80 % of the time asked for.
    let mut numbers = PROBE_COUNT;
    let (fuel, took) = loop {
        let (fuel, took) = count(&runtime, &module, numbers).await?;
        if took.as_secs_f64() >= 0.8 * seconds {
            break (fuel, took);
        }
        let scale = (seconds / took.as_secs_f64().max(1e-6)).min(100.0);
        numbers = (numbers as f64 * scale) as u64;
    };
    Ok(Calibration {
        fuel_per_second: (fuel as f64 / took.as_secs_f64()) as u64,
        module: MODULE.into(),
        measured_seconds: took.as_secs_f64(),
        measured_at: Utc::now(),
    })
}

/// Count to `numbers` in the sandbox; the fuel used and the CPU time it took.
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
        context: StepContext::default(),
    };
    let started = cpu_time();
    let report = runtime
        .run(
            module,
            request,
            Arc::new(NullHost),
            CancellationToken::new(),
        )
        .await;
    let took = cpu_time().saturating_sub(started);
    anyhow::ensure!(
        report.outcome.is_success(),
        "{MODULE} did not complete: {:?}",
        report.outcome
    );
    Ok((report.fuel_used, took))
}

/// CPU time this process has used (all its threads: the guest may move
/// between the async runtime's threads at each epoch yield).
pub fn cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}
