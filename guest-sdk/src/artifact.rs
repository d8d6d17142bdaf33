//! Named files of a run (a backup dump, an export) that users download afterwards.
//!
//! Large outputs belong here rather than in the step's JSON output. Write big artifacts
//! in pieces with [`append`] so the step never holds the whole file in memory.

use crate::__bindings::stepwise::step::host;
use crate::StepError;

/// Creates or replaces the artifact `name` with `data`.
pub fn write(name: &str, data: impl AsRef<[u8]>) -> Result<(), StepError> {
    put(name, data.as_ref(), false)
}

/// Appends `data` to the artifact `name`, creating it if needed.
pub fn append(name: &str, data: impl AsRef<[u8]>) -> Result<(), StepError> {
    put(name, data.as_ref(), true)
}

fn put(name: &str, data: &[u8], append: bool) -> Result<(), StepError> {
    host::artifact_write(name, data, append)
        .map_err(|e| StepError::new(format!("could not write artifact `{name}`: {e}")))
}
