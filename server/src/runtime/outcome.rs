//! What happened to a step: the typed verdict the engine stores and the API shows.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a step stopped. Every way a step can end has its own variant, so callers
/// (and tests) match on the kind instead of parsing messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutcome {
    /// `run` returned `ok`; `output` is the JSON the step produced.
    Completed { output: serde_json::Value },
    /// `run` returned `err` with this message.
    ReturnedError {
        message: String,
        /// The step called `mark-permanent` first: a retry cannot help, so
        /// the task is not retried. Absent (false) in outcomes stored before.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        permanent: bool,
    },
    /// The guest trapped (panic, `unreachable`, stack overflow, ...).
    Trapped {
        /// The wasm trap code, e.g. `unreachable`, `stack_overflow`.
        trap: String,
        message: String,
        /// The wasm backtrace, one frame per line.
        backtrace: String,
    },
    /// The fuel budget (`max_execution_time × fuel_per_second`) ran out.
    OutOfFuel { fuel_budget: u64 },
    /// The wall-clock deadline passed (time spent outside guest code, e.g. sleeping).
    Deadline { seconds: f64 },
    /// The step tried to grow its memories and tables beyond its cap.
    MemoryCap { limit_bytes: u64 },
    /// The step handed the host a checkpoint bigger than the checkpoint cap
    /// (refused before it was copied).
    CheckpointCap { size_bytes: u64, limit_bytes: u64 },
    /// An artifact write would have made the artifact bigger than the artifact cap.
    ArtifactCap {
        name: String,
        size_bytes: u64,
        limit_bytes: u64,
    },
    /// Someone cancelled the step from outside.
    Cancelled,
    /// The guest called `exit` (wasi:cli/exit).
    Exited { code: i32 },
    /// The component could not be instantiated or its output was not JSON.
    Failed { message: String },
}

impl StepOutcome {
    /// The variant's name as stored (`completed`, `deadline`, ...): a label
    /// for counting outcomes.
    pub fn kind(&self) -> &'static str {
        match self {
            StepOutcome::Completed { .. } => "completed",
            StepOutcome::ReturnedError { .. } => "returned_error",
            StepOutcome::Trapped { .. } => "trapped",
            StepOutcome::OutOfFuel { .. } => "out_of_fuel",
            StepOutcome::Deadline { .. } => "deadline",
            StepOutcome::MemoryCap { .. } => "memory_cap",
            StepOutcome::CheckpointCap { .. } => "checkpoint_cap",
            StepOutcome::ArtifactCap { .. } => "artifact_cap",
            StepOutcome::Cancelled => "cancelled",
            StepOutcome::Exited { .. } => "exited",
            StepOutcome::Failed { .. } => "failed",
        }
    }

    /// True only for [`StepOutcome::Completed`].
    pub fn is_success(&self) -> bool {
        matches!(self, StepOutcome::Completed { .. })
    }

    /// True when the step said that trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StepOutcome::ReturnedError {
                permanent: true,
                ..
            }
        )
    }

    /// True when a limit of the sandbox stopped the step (`interrupted` in the lifecycle).
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            StepOutcome::OutOfFuel { .. }
                | StepOutcome::Deadline { .. }
                | StepOutcome::MemoryCap { .. }
                | StepOutcome::CheckpointCap { .. }
                | StepOutcome::ArtifactCap { .. }
                | StepOutcome::Cancelled
        )
    }

    /// One line for a human: what stopped the step and, for limits, which one.
    pub fn summary(&self) -> String {
        match self {
            StepOutcome::Completed { .. } => "completed".into(),
            StepOutcome::ReturnedError {
                message,
                permanent: false,
            } => format!("step returned an error: {message}"),
            StepOutcome::ReturnedError {
                message,
                permanent: true,
            } => format!("step returned an error (permanent, not retried): {message}"),
            StepOutcome::Trapped { trap, message, .. } => {
                format!("step trapped ({trap}): {message}")
            }
            StepOutcome::OutOfFuel { fuel_budget } => format!(
                "step ran out of fuel: it used its whole budget of {fuel_budget} units (max_execution_time × fuel_per_second)"
            ),
            StepOutcome::Deadline { seconds } => {
                format!("step passed its wall-clock deadline of {seconds:.1} s")
            }
            StepOutcome::MemoryCap { limit_bytes } => {
                format!("step exceeded its memory cap of {limit_bytes} bytes")
            }
            StepOutcome::CheckpointCap {
                size_bytes,
                limit_bytes,
            } => format!(
                "step saved a checkpoint of {size_bytes} bytes, over the checkpoint cap of {limit_bytes} bytes; checkpoint where the work is (a position, ids done), not the data"
            ),
            StepOutcome::ArtifactCap {
                name,
                size_bytes,
                limit_bytes,
            } => format!(
                "step's artifact `{name}` would be {size_bytes} bytes, over the artifact cap of {limit_bytes} bytes; split the output into several artifacts"
            ),
            StepOutcome::Cancelled => "step was cancelled".into(),
            StepOutcome::Exited { code } => format!("step called exit with code {code}"),
            StepOutcome::Failed { message } => message.clone(),
        }
    }
}

/// The verdict plus what the step consumed.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub outcome: StepOutcome,
    /// Fuel units the guest burned.
    pub fuel_used: u64,
    /// Highest total of memories and tables the step held, in bytes.
    pub peak_memory: u64,
    /// Wall time from instantiation to teardown.
    pub duration: Duration,
}
