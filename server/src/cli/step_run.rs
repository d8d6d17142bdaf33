//! `stepwise step run`: run one step module locally, in the same sandbox as
//! the server, for step authors. Progress and logs go to stderr, the result
//! JSON to stdout; a failure is one line and a non-zero exit.

use crate::runtime::{
    CapExceeded, HostRefusal, LogLevel, Runtime, RuntimeConfig, StepContext, StepHost, StepLimits,
    StepOutcome, StepRequest,
};
use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct StepRunArgs {
    /// The component to run (a .wasm built for wasm32-wasip2).
    pub module: PathBuf,
    /// The step's settings as JSON.
    #[arg(long, default_value = "{}")]
    pub settings: String,
    /// Seconds of execution the step may use (its fuel budget).
    #[arg(long, default_value_t = 60)]
    pub max_execution_time: u64,
    /// Memory cap in bytes across all of the step's memories and tables.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_memory: u64,
    /// A secret the step may read, as NAME=VALUE (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// Task details as a JSON object, seen by the step through `context()`.
    #[arg(long, default_value = "{}")]
    pub details: String,
    /// Where artifacts the step writes are saved.
    #[arg(long, default_value = "artifacts")]
    pub artifacts_dir: PathBuf,
    /// Fuel units per second of execution time. Default: the calibration kept
    /// in --data-dir (as `serve` uses it), else a fixed figure.
    #[arg(long)]
    pub fuel_per_second: Option<u64>,
    /// The data directory whose calibration (`calibration.json`) sets the fuel rate.
    #[arg(long, env = "STEPWISE_DATA_DIR", default_value = "stepwise-data")]
    pub data_dir: PathBuf,
}

/// Prints to the terminal, keeps checkpoints in memory, saves artifacts to a
/// folder. The runtime holds checkpoints and single writes to the server's
/// caps; this holds appends to the artifact cap, as the server's store does.
struct LocalHost {
    secrets: HashMap<String, String>,
    checkpoint: Mutex<Option<Vec<u8>>>,
    artifacts_dir: PathBuf,
    artifact_cap: u64,
}

impl StepHost for LocalHost {
    fn progress(&self, percent: f32, message: &str) {
        eprintln!("[{percent:>5.1}%] {message}");
    }

    fn log(&self, level: LogLevel, message: &str) {
        eprintln!("{:>5} {message}", level.as_str().to_uppercase());
    }

    fn checkpoint_save(&self, data: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        eprintln!("checkpoint saved ({} bytes)", data.len());
        *self.checkpoint.lock() = Some(data);
        async { Ok(()) }.boxed()
    }

    fn checkpoint_load(&self) -> BoxFuture<'static, Option<Vec<u8>>> {
        let data = self.checkpoint.lock().clone();
        async move { data }.boxed()
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }

    fn artifact_write(
        &self,
        name: String,
        data: Vec<u8>,
        append: bool,
    ) -> BoxFuture<'static, Result<(), HostRefusal>> {
        let dir = self.artifacts_dir.clone();
        let limit = self.artifact_cap;
        async move {
            crate::store::validate_artifact_name(&name)?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let path = dir.join(&name);
            let existing = match std::fs::metadata(&path) {
                Ok(meta) if append => meta.len(),
                _ => 0,
            };
            let size = existing + data.len() as u64;
            if size > limit {
                return Err(HostRefusal::Cap(CapExceeded::Artifact {
                    name,
                    size,
                    limit,
                }));
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(&data)
                .map_err(|e| HostRefusal::Error(e.to_string()))
        }
        .boxed()
    }
}

pub async fn run(args: StepRunArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let mut secrets = HashMap::new();
    for pair in &args.secrets {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--secret `{pair}` must be NAME=VALUE"))?;
        secrets.insert(name.to_string(), value.to_string());
    }
    serde_json::from_str::<serde_json::Value>(&args.settings)
        .context("--settings is not valid JSON")?;
    let details: serde_json::Value =
        serde_json::from_str(&args.details).context("--details is not valid JSON")?;

    let mut config = RuntimeConfig::local(compile_cache());
    config.fuel_per_second = args.fuel_per_second.unwrap_or_else(|| {
        match crate::calibration::load(&args.data_dir) {
            Some(calibration) => calibration.fuel_per_second,
            None => {
                eprintln!(
                    "no calibration in {}: {:.1e} fuel units a second (`stepwise calibrate` measures this machine)",
                    args.data_dir.display(),
                    crate::runtime::DEFAULT_FUEL_PER_SECOND as f64
                );
                crate::runtime::DEFAULT_FUEL_PER_SECOND
            }
        }
    });
    let runtime = Runtime::new(config)?;
    let module = runtime
        .prepare(&bytes)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let host = Arc::new(LocalHost {
        secrets,
        checkpoint: Mutex::new(None),
        artifacts_dir: args.artifacts_dir,
        artifact_cap: runtime.caps().artifact_bytes,
    });
    let request = StepRequest {
        settings: args.settings,
        limits: StepLimits {
            max_execution_time: Duration::from_secs(args.max_execution_time),
            max_memory: args.max_memory,
        },
        context: StepContext {
            task_id: 0,
            run_id: 0,
            step_id: 0,
            attempt: 1,
            details,
        },
    };
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let report = runtime.run(&module, request, host, cancel).await;
    eprintln!(
        "fuel used: {}, peak memory: {} bytes, took {:.3} s",
        report.fuel_used,
        report.peak_memory,
        report.duration.as_secs_f64()
    );
    match report.outcome {
        StepOutcome::Completed { output } => {
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(ExitCode::SUCCESS)
        }
        StepOutcome::Trapped { ref backtrace, .. } => {
            eprintln!("{backtrace}");
            eprintln!("error: {}", report.outcome.summary());
            Ok(ExitCode::FAILURE)
        }
        other => {
            eprintln!("error: {}", other.summary());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Where local commands keep compiled modules: one cache per user.
pub(super) fn compile_cache() -> PathBuf {
    std::env::temp_dir().join(format!("stepwise-step-run-{}", whoami()))
}

fn whoami() -> u32 {
    // The effective uid keeps one user's cache apart from another's.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}
