//! `demo/count`: the module for a first try. Counts from 1 to `to`, mixing every number
//! into a checksum (so the work is real and not optimized away), and reports progress
//! about a hundred times on the way.
//!
//! ```json
//! {"to": 1000000}
//! {"to": 5000, "report_every": 500, "sleep_ms_per_report": 200}
//! ```
//! The second form takes about two seconds of wall time, long enough to watch the
//! progress bar move in the dashboard.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stepwise_guest::{StepError, ensure_permanent, export_step, progress};

/// Settings of `demo/count`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Count up to this number (at least 1).
    #[serde(default = "a_million")]
    to: u64,
    /// Report progress every this many numbers; by default about 100 reports in all.
    report_every: Option<u64>,
    /// Sleep this long at each report, to make the run take observable time.
    #[serde(default)]
    sleep_ms_per_report: u64,
}

fn a_million() -> u64 {
    1_000_000
}

/// What `demo/count` returns.
#[derive(Serialize)]
struct Output {
    /// How many numbers were counted.
    counted: u64,
    /// The 64-bit checksum as 16 hex digits (JSON numbers lose precision past 2^53).
    checksum: String,
}

/// One xorshift64 round: cheap, but not something the compiler can fold away.
fn mix(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn count(settings: Settings) -> Result<Output, StepError> {
    ensure_permanent!(settings.to >= 1, "`to` must be at least 1");
    let every = settings.report_every.unwrap_or(settings.to / 100).max(1);
    let mut checksum = 0x9e37_79b9_7f4a_7c15u64;
    for n in 1..=settings.to {
        checksum = mix(checksum ^ n);
        if n % every == 0 || n == settings.to {
            let percent = (n as f64 * 100.0 / settings.to as f64) as f32;
            progress(percent, format_args!("counted {n} of {}", settings.to));
            if settings.sleep_ms_per_report > 0 {
                std::thread::sleep(Duration::from_millis(settings.sleep_ms_per_report));
            }
        }
    }
    Ok(Output {
        counted: settings.to,
        checksum: format!("{checksum:016x}"),
    })
}

export_step!(count);
