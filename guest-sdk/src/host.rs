//! Typed wrappers over the host calls that are not grouped in a module of their own:
//! progress, secrets, the step's context and its remaining budget.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::__bindings::stepwise::step::host;
use crate::StepError;

/// Reports progress: `percent` in 0..=100 (the host clamps it) and a short message.
///
/// Every call is one event pushed to the dashboard and the WebSocket; for a loop over many
/// items use [`Progress`], which reports only when the whole percent changes.
pub fn progress(percent: f32, message: impl fmt::Display) {
    host::progress(percent, &message.to_string());
}

/// Counts items done out of a known total and reports progress as a percentage.
///
/// It reports at most once per whole percent (plus the last item), so calling
/// [`advance`](Progress::advance) for each of a million rows costs about a hundred host
/// calls.
///
/// ```no_run
/// use stepwise_guest::Progress;
///
/// let tables = ["orders", "customers"];
/// let progress = Progress::new(tables.len() as u64);
/// for table in tables {
///     // ... dump the table ...
///     progress.advance(format_args!("dumped {table}"));
/// }
/// ```
#[derive(Debug)]
pub struct Progress {
    total: u64,
    done: Cell<u64>,
    reported: Cell<Option<u32>>,
}

impl Progress {
    /// Progress over `total` items, none done yet. A total of 0 reports 100 %.
    pub fn new(total: u64) -> Self {
        Self {
            total,
            done: Cell::new(0),
            reported: Cell::new(None),
        }
    }

    /// One more item is done; reports if the whole percent changed.
    pub fn advance(&self, message: impl fmt::Display) {
        self.set(self.done.get().saturating_add(1), message);
    }

    /// `done` items are done (e.g. when resuming from a checkpoint); reports if the whole
    /// percent changed.
    pub fn set(&self, done: u64, message: impl fmt::Display) {
        let done = done.min(self.total);
        self.done.set(done);
        let percent = self.percent();
        let whole = percent as u32;
        if self.reported.get() != Some(whole) || done == self.total {
            self.reported.set(Some(whole));
            progress(percent, message);
        }
    }

    /// Items done so far.
    pub fn done(&self) -> u64 {
        self.done.get()
    }

    /// The total given to [`Progress::new`].
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Percentage done, 0.0..=100.0.
    pub fn percent(&self) -> f32 {
        if self.total == 0 {
            return 100.0;
        }
        (self.done.get() as f64 * 100.0 / self.total as f64) as f32
    }
}

/// Reads a secret of the task (an API key, a password) by name; `None` when the task has
/// no such secret. Never log or return it: the server keeps secrets out of every output.
pub fn secret(name: &str) -> Option<String> {
    host::secret(name)
}

/// Like [`secret`], but a missing secret is an error that names it and says what to do.
pub fn require_secret(name: &str) -> Result<String, StepError> {
    secret(name).ok_or_else(|| {
        StepError::permanent(format!(
            "secret `{name}` is not set on this task; add it to the task's secrets"
        ))
    })
}

/// Where the step runs; see [`context`].
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The task this step belongs to.
    pub task_id: i64,
    /// The run (one execution attempt of the task).
    pub run_id: i64,
    /// This step.
    pub step_id: i64,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The task's details (key -> JSON value), e.g. what a shop admin entered.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Context {
    /// The task detail `key` parsed as `T`; `Ok(None)` when the task has no such detail.
    pub fn detail<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StepError> {
        self.details
            .get(key)
            .map(|value| {
                T::deserialize(value)
                    .map_err(|e| StepError::new(format!("task detail `{key}`: {e}")))
            })
            .transpose()
    }
}

/// Ids, which attempt this is, and the task's details.
///
/// Details that are not a JSON object (the host always sends one) read as empty.
pub fn context() -> Context {
    let raw = host::context();
    Context {
        task_id: raw.task_id,
        run_id: raw.run_id,
        step_id: raw.step_id,
        attempt: raw.attempt,
        details: serde_json::from_str(&raw.details).unwrap_or_default(),
    }
}

/// What is left of the step's budget; see [`remaining`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Fuel units left (one unit is roughly one wasm instruction).
    pub fuel: u64,
    /// Wall-clock time left before the deadline.
    pub time: Duration,
}

/// Fuel and time left, e.g. to stop at a clean point and save a checkpoint before the
/// budget runs out.
pub fn remaining() -> Budget {
    let raw = host::remaining();
    Budget {
        fuel: raw.fuel,
        time: Duration::from_millis(raw.millis),
    }
}
