//! `stepwise calibrate`: measure again how many fuel units this machine burns
//! in a second of typical step code, and keep it where `serve` reads it.
//!
//! `serve` measures briefly at its first start (see [`crate::calibration`]);
//! this measures for longer, on a machine you have made idle, and rewrites
//! `calibration.json` in the data directory. It also prints the rate as a
//! `fuel_per_second` line for a config file, for machines that should all
//! use one figure.

use crate::calibration;
use crate::runtime::DEFAULT_FUEL_PER_SECOND;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// About how long to measure, in seconds (0.1 to 60). Run it on an
    /// otherwise idle machine: a busy one measures less than its cores can do.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// The data directory of the server whose calibration this replaces.
    #[arg(long, env = "STEPWISE_DATA_DIR", default_value = "stepwise-data")]
    pub data_dir: PathBuf,
}

pub async fn run(args: CalibrateArgs) -> anyhow::Result<ExitCode> {
    if !(0.1..=60.0).contains(&args.seconds) {
        anyhow::bail!("--seconds must be between 0.1 and 60, not {}", args.seconds);
    }
    // The same compile cache as `stepwise step run`.
    let measured = calibration::measure(&super::step_run::compile_cache(), args.seconds).await?;
    let rate = measured.fuel_per_second;
    std::fs::create_dir_all(&args.data_dir)?;
    calibration::save(&args.data_dir, &measured)?;
    eprintln!(
        "{} ran {:.2} s: {rate:.3e} fuel units a second on this machine (a fixed {:.3e} \
         would give {:.2} s of work here per second of max_execution_time).",
        measured.module,
        measured.measured_seconds,
        DEFAULT_FUEL_PER_SECOND as f64,
        DEFAULT_FUEL_PER_SECOND as f64 / rate.max(1) as f64,
    );
    eprintln!(
        "Saved to {}: `stepwise serve` with this data directory uses it from its next start, \
         unless --fuel-per-second, STEPWISE_FUEL_PER_SECOND or the config file sets a rate. \
         For a config file:",
        calibration::path(&args.data_dir).display()
    );
    println!("fuel_per_second = {rate}");
    Ok(ExitCode::SUCCESS)
}
