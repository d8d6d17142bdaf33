//! What the engine counts for `/metrics`: the seam between the engine, which
//! records, and the API, which exposes (the engine knows no web server).
//!
//! Every handle is created once, with the engine. Recording on the hot path
//! (claim → run → run end) is an atomic add: a run's outcome counter is picked
//! from a fixed array; a step's per-module histograms are looked up once per
//! step under a read lock (a step costs far more than that lookup).

use super::policy::RunVerdict;
use crate::runtime::StepOutcome;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The run verdicts, in the order of [`EngineMetrics::runs`].
const VERDICTS: [(RunVerdict, &str); 5] = [
    (RunVerdict::Succeeded, "succeeded"),
    (RunVerdict::Failed, "failed"),
    (RunVerdict::Interrupted, "interrupted"),
    (RunVerdict::FailedPermanently, "failed_permanently"),
    (RunVerdict::Cancelled, "cancelled"),
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    module: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    outcome: &'static str,
}

type Histograms = Family<ModuleLabel, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms … ~33 min.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

fn fuel() -> Histogram {
    // 10^5 … ~10^12 units (a second of guest code is ~10^9).
    Histogram::new(exponential_buckets(1e5, 10.0, 8))
}

fn bytes() -> Histogram {
    // 64 KiB … 4 GiB.
    Histogram::new(exponential_buckets(65536.0, 4.0, 9))
}

/// The engine's counters and histograms. Cheap to share (handles are `Arc`s).
pub struct EngineMetrics {
    runs: Family<VerdictLabel, Counter>,
    /// The handles of `runs`, one per verdict in the order of [`VERDICTS`].
    run_counters: [Counter; VERDICTS.len()],
    steps: Family<StepLabel, Counter>,
    step_seconds: Histograms,
    step_fuel: Histograms,
    step_memory: Histograms,
    queue_wait: Histogram,
    rescues: Counter,
    compile_seconds: Histogram,
    log_lines_capped: Counter,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        let runs = Family::<VerdictLabel, Counter>::default();
        let run_counters =
            VERDICTS.map(|(_, outcome)| runs.get_or_create(&VerdictLabel { outcome }).clone());
        EngineMetrics {
            runs,
            run_counters,
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(seconds),
            step_fuel: Family::new_with_constructor(fuel),
            step_memory: Family::new_with_constructor(bytes),
            queue_wait: seconds(),
            rescues: Counter::default(),
            compile_seconds: seconds(),
            log_lines_capped: Counter::default(),
        }
    }
}

/// What one step did, for [`EngineMetrics::step_ended`].
pub(super) struct StepFacts<'a> {
    pub module: &'a str,
    pub outcome: &'a StepOutcome,
    pub duration: Duration,
    pub fuel_used: u64,
    pub peak_memory: u64,
}

impl EngineMetrics {
    pub(super) fn run_ended(&self, verdict: RunVerdict) {
        if let Some(i) = VERDICTS.iter().position(|(v, _)| *v == verdict) {
            self.run_counters[i].inc();
        }
    }

    pub(super) fn step_ended(&self, step: &StepFacts<'_>) {
        let module = ModuleLabel {
            module: step.module.to_string(),
        };
        self.steps
            .get_or_create(&StepLabel {
                module: module.module.clone(),
                outcome: step.outcome.kind(),
            })
            .inc();
        self.step_seconds
            .get_or_create(&module)
            .observe(step.duration.as_secs_f64());
        self.step_fuel
            .get_or_create(&module)
            .observe(step.fuel_used as f64);
        self.step_memory
            .get_or_create(&module)
            .observe(step.peak_memory as f64);
    }

    /// From the moment the task was due to the moment its run started here.
    pub(super) fn queue_waited(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    pub(super) fn rescued(&self, runs: usize) {
        self.rescues.inc_by(runs as u64);
    }

    pub(super) fn compiled(&self, took: Duration) {
        self.compile_seconds.observe(took.as_secs_f64());
    }

    pub(super) fn log_lines_dropped(&self, lines: u64) {
        self.log_lines_capped.inc_by(lines);
    }

    /// Add the engine's metrics to `registry` (which the API encodes).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "runs",
            "Runs ended on this node, by outcome",
            self.runs.clone(),
        );
        registry.register(
            "steps",
            "Steps ended on this node, by module and typed outcome (deadline = timed out)",
            self.steps.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "How long steps ran, by module",
            self.step_seconds.clone(),
        );
        registry.register(
            "step_fuel_used",
            "Fuel (wasm instructions, roughly) steps used, by module",
            self.step_fuel.clone(),
        );
        registry.register(
            "step_peak_memory_bytes",
            "Largest memory of steps, by module",
            self.step_memory.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "From a task's due time to its run's start on this node",
            self.queue_wait.clone(),
        );
        registry.register(
            "rescues",
            "Runs rescued by this node (their node died or stopped)",
            self.rescues.clone(),
        );
        registry.register(
            "module_compile_seconds",
            "How long compiling a module took on this node",
            self.compile_seconds.clone(),
        );
        registry.register(
            "run_log_lines_capped",
            "Log lines dropped by the per-run cap (max_log_lines_per_run)",
            self.log_lines_capped.clone(),
        );
    }
}
